"""SimCLR (Chen et al., ICML 2020, arXiv 2002.05709).

    L = NT-Xent(z1, z2; τ),   z_i = g(f(x_i))

f the encoder, g the projector, x1 and x2 two augmentations of one image (or, with
`config.data.pairs`, two rendered views of one object as in SIE's 3DIEBench
baseline). NT-Xent: cosine logits / τ over the 2N views of the global batch, the
other view of the same image is the positive, self-similarity removed.
"""

import dataclasses

from steerjax import losses
from steerjax.methods import common


@dataclasses.dataclass(frozen=True)
class SimCLR(common.TwoViewMethod):

  def loss(self, outputs, inputs, target_outputs, step):
    del inputs, target_outputs, step
    loss = losses.nt_xent(outputs["z1"], outputs["z2"], self.config.loss.temperature)
    return loss, {"nt_xent": loss}
