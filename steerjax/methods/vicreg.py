"""VICReg (Bardes, Ponce, LeCun, ICLR 2022, arXiv 2105.04906).

    L = λ MSE(z1, z2) + μ (h(Z1) + h(Z2)) / 2 + ν (c(Z1) + c(Z2))

h(Z) = mean_j relu(1 − sqrt(Var(Z_j) + 1e-4)) keeps every dimension's spread above 1,
c(Z) = Σ_{i≠j} C(Z)_ij² / d decorrelates dimensions. λ, μ, ν = `loss.sim_coeff`,
`loss.std_coeff`, `loss.cov_coeff`: 25/25/1 in the paper, 10/10/1 in SIE's baseline
(two rendered views of one object, `data.pairs`).
"""

import dataclasses

from steerjax import losses
from steerjax.methods import common


@dataclasses.dataclass(frozen=True)
class VICReg(common.TwoViewMethod):

  def loss(self, outputs, inputs, target_outputs, step):
    del inputs, target_outputs, step
    c = self.config.loss
    return losses.vicreg_loss(outputs["z1"], outputs["z2"], sim_coeff=c.sim_coeff,
                              std_coeff=c.std_coeff, cov_coeff=c.cov_coeff)
