"""VICReg + EquiMod: SIE's VICReg-based EquiMod baseline (Garrido, Najman, LeCun, ICML 2023,
arXiv 2302.10283; official code facebookresearch/SIE, src/models.py class VICRegEquiMod).

    L = L_inv + ε L_equi
    L_inv  = λ MSE(z1, z2)          + μ (h(Z1) + h(Z2)) / 2 + ν (c(Z1) + c(Z2))
    L_equi = λ MSE(W(g) y1, y2)     + μ (h(Y1) + h(Y2)) / 2 + ν (c(Y1) + c(Y2))

Unlike SIE the representation is not split: an invariant projector (z) and an equivariant
projector (y) both read the whole f(x). Each part carries its own VICReg variance h and
covariance c terms (see `losses`), the equivariant part's on the two views' projections y1, y2
and not on the prediction W(g) y1, and nothing decorrelates z from y. The predictor is SIE's
hypernetwork (`config.steerer`) conditioned on the rendered transformation g from view 1 to
view 2. λ, μ, ν, ε = `loss.sim_coeff`, `loss.std_coeff`, `loss.cov_coeff`, `loss.equi_factor`.
"""

import dataclasses

from steerjax import losses
from steerjax.methods import equimod


def vicreg_equimod_loss(z1, z2, y1, y2, y2_hat, *, sim_coeff, std_coeff, cov_coeff, equi_factor):
  """The official VICRegEquiMod objective; returns (loss, unweighted terms)."""
  inv, inv_terms = losses.vicreg_loss(z1, z2, sim_coeff=sim_coeff, std_coeff=std_coeff, cov_coeff=cov_coeff)
  equi_terms = {
      "invariance": losses.vicreg_invariance(y2_hat, y2),
      "variance": (losses.vicreg_variance(y1) + losses.vicreg_variance(y2)) / 2,
      "covariance": losses.vicreg_covariance(y1) + losses.vicreg_covariance(y2),
  }
  equi = (sim_coeff * equi_terms["invariance"] + std_coeff * equi_terms["variance"]
          + cov_coeff * equi_terms["covariance"])
  terms = {**{f"inv_{k}": v for k, v in inv_terms.items()},
           **{f"equi_{k}": v for k, v in equi_terms.items()}, "invariant": inv, "equivariant": equi}
  return inv + equi_factor * equi, terms


@dataclasses.dataclass(frozen=True)
class VICRegEquiMod(equimod.EquiModPairs):
  """EquiMod on rendered view pairs (same model) with VICReg terms in place of NT-Xent."""

  def loss(self, outputs, inputs, target_outputs, step):
    del inputs, target_outputs, step
    c = self.config.loss
    return vicreg_equimod_loss(outputs["z1"], outputs["z2"], outputs["y1"], outputs["y2"],
                               outputs["y2_hat"], sim_coeff=c.sim_coeff, std_coeff=c.std_coeff,
                               cov_coeff=c.cov_coeff, equi_factor=c.equi_factor)
