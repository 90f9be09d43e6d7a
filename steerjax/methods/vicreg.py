"""VICReg (Bardes, Ponce, LeCun, ICLR 2022, arXiv 2105.04906).

    L = λ MSE(z1, z2) + μ (h(Z1) + h(Z2)) / 2 + ν (c(Z1) + c(Z2))

h(Z) = mean_j relu(1 − sqrt(Var(Z_j) + 1e-4)) keeps every dimension's spread above 1,
c(Z) = Σ_{i≠j} C(Z)_ij² / d decorrelates dimensions. λ, μ, ν = `loss.sim_coeff`,
`loss.std_coeff`, `loss.cov_coeff`: 25/25/1 in the paper, 10/10/1 in SIE's baseline
(two rendered views of one object, `data.pairs`).
"""

import dataclasses

import flax.linen as nn

from steerjax import losses
from steerjax.methods import common
from steerjax.methods.base import Method


@dataclasses.dataclass(frozen=True)
class VICReg(Method):

  def __post_init__(self):
    object.__setattr__(self, "needs_pairs", common.uses_pairs(self.config))

  def build_model(self) -> nn.Module:
    return common.TwoViewModel(common.encoder(self.config), common.projector(self.config))

  def make_inputs(self, batch, rng):
    v1, v2, _ = common.view_pair(self, batch, rng)
    return {"view1": v1, "view2": v2}

  def loss(self, outputs, inputs, target_outputs, step):
    del inputs, target_outputs, step
    c = self.config.loss
    return losses.vicreg_loss(outputs["z1"], outputs["z2"], c.sim_coeff, c.std_coeff, c.cov_coeff)
