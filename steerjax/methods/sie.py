"""SIE: Split Invariant-Equivariant representations (Garrido, Najman, LeCun, ICML 2023,
arXiv 2302.10283; official code facebookresearch/SIE, src/models.py class SIE).

    L = λ MSE(z_inv, z′_inv) + ε λ MSE(W(g) z_equi, z′_equi)
        + μ (h(Z) + h(Z′)) / 2 + μ h(W(g) z_equi) / 2 + ν (c(Z) + c(Z′))

The backbone representation f(x) is split: the first half is invariant, the second half
equivariant; each half has its own projector (z_inv, z_equi). Z = [z_inv ; z_equi] is the
concatenated projection of view 1 and Z′ that of view 2, so the variance h and covariance c
terms (VICReg's, see `losses`) also decorrelate the two parts. The predictor is a linear
hypernetwork W(g) = reshape(H g) (W[i, j] = (Hg)[i·d + j], ẑ = W z, no bias) conditioned on
the rendered transformation g from view 1 to view 2 (quaternion, w ≥ 0; with
`steerer.use_colour` also the floor- and spot-hue differences); its output gets a one-sided
variance hinge and no covariance term. λ, μ, ν, ε = `loss.sim_coeff`, `loss.std_coeff`,
`loss.cov_coeff`, `loss.equi_factor` (published command: 10, 10, 1, 0.45).

Both views go through the encoder as one batch (BatchNorm statistics over 2B); the official
code runs them separately. Evaluation (MRR, H@k, PRE) uses the equivariant projection of the
equivariant half and the trained predictor, as the official eval_MRR_Hk.py does:
`steer_embed(x) = proj_equi(f(x)[d/2:])`, `steer = W(g)`.
"""

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from steerjax import losses
from steerjax.methods import common


class SIEModel(nn.Module):
  encoder: nn.Module
  projector_inv: nn.Module
  projector_equi: nn.Module
  predictor: nn.Module

  def split(self, h):
    """(invariant half, equivariant half) of the representation."""
    return jnp.split(h, 2, axis=-1)

  def __call__(self, inputs, train: bool):
    h_inv, h_equi = self.split(
        self.encoder(jnp.concatenate([inputs["view1"], inputs["view2"]]), train))
    z_inv, z_inv2 = jnp.split(self.projector_inv(h_inv, train), 2)
    z_equi, z_equi2 = jnp.split(self.projector_equi(h_equi, train), 2)
    return {"z_inv": z_inv, "z_inv2": z_inv2, "z_equi": z_equi, "z_equi2": z_equi2,
            "pred": self.predictor(z_equi, inputs["g"], train=train)}

  def embed(self, x):
    return self.encoder(x, train=False)

  def steer_embed(self, x):
    return self.projector_equi(self.split(self.embed(x))[1], train=False)

  def steer(self, z, g):
    return self.predictor(z, g, train=False)


def sie_loss(z_inv, z_inv2, z_equi, z_equi2, pred, *, sim_coeff, std_coeff, cov_coeff, equi_factor):
  """The official SIE objective from the five projections; returns (loss, unweighted terms).

  Coefficients are keyword-only: a positional call could silently swap them.
  """
  x = jnp.concatenate([z_inv, z_equi], axis=-1)
  y = jnp.concatenate([z_inv2, z_equi2], axis=-1)
  terms = {
      "invariance": losses.vicreg_invariance(z_inv, z_inv2),
      "equivariance": losses.vicreg_invariance(pred, z_equi2),
      "variance": (losses.vicreg_variance(x) + losses.vicreg_variance(y)) / 2,
      "pred_variance": losses.vicreg_variance(pred) / 2,
      "covariance": losses.vicreg_covariance(x) + losses.vicreg_covariance(y),
  }
  loss = (sim_coeff * terms["invariance"] + equi_factor * sim_coeff * terms["equivariance"]
          + std_coeff * terms["variance"] + std_coeff * terms["pred_variance"]
          + cov_coeff * terms["covariance"])
  return loss, terms


@dataclasses.dataclass(frozen=True)
class SIE(common.RenderedPairMethod):

  @property
  def representation_parts(self) -> tuple[tuple[str, slice], ...]:
    half = common.encoder(self.config).feature_dim // 2
    return (("inv", slice(0, half)), ("equi", slice(half, None)))

  def build_model(self) -> nn.Module:
    c = self.config
    return SIEModel(common.encoder(c), common.projector(c), common.projector(c),
                    common.steerer(c, c.head.proj_dim, self.g_dim()))

  def loss(self, outputs, inputs, target_outputs, step):
    del inputs, target_outputs, step
    c = self.config.loss
    return sie_loss(outputs["z_inv"], outputs["z_inv2"], outputs["z_equi"], outputs["z_equi2"],
                    outputs["pred"], sim_coeff=c.sim_coeff, std_coeff=c.std_coeff,
                    cov_coeff=c.cov_coeff, equi_factor=c.equi_factor)
