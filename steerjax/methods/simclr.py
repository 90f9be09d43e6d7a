"""SimCLR (Chen et al., ICML 2020, arXiv 2002.05709).

    L = NT-Xent(z1, z2; τ),   z_i = g(f(x_i))

f the encoder, g the projector, x1 and x2 two augmentations of one image (or, with
`config.data.pairs`, two rendered views of one object as in SIE's 3DIEBench
baseline). NT-Xent: cosine logits / τ over the 2N views of the global batch, the
other view of the same image is the positive, self-similarity removed.
"""

import dataclasses

import flax.linen as nn

from steerjax import losses
from steerjax.methods import common
from steerjax.methods.base import Method


@dataclasses.dataclass(frozen=True)
class SimCLR(Method):

  def __post_init__(self):
    object.__setattr__(self, "needs_pairs", common.uses_pairs(self.config))

  def build_model(self) -> nn.Module:
    return common.TwoViewModel(common.encoder(self.config), common.projector(self.config))

  def make_inputs(self, batch, rng):
    v1, v2, _ = common.view_pair(self, batch, rng)
    return {"view1": v1, "view2": v2}

  def loss(self, outputs, inputs, target_outputs, step):
    del inputs, target_outputs, step
    loss = losses.nt_xent(outputs["z1"], outputs["z2"], self.config.loss.temperature)
    return loss, {"nt_xent": loss}
