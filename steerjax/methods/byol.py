"""BYOL (Grill et al., NeurIPS 2020, arXiv 2006.07733).

    L = ‖q(z1)/‖q(z1)‖ − z̄2/‖z̄2‖‖² + ‖q(z2)/‖q(z2)‖ − z̄1/‖z̄1‖‖²
      = (2 − 2 cos(q(z1), z̄2)) + (2 − 2 cos(q(z2), z̄1)),   each a mean over the batch

z_i = g(f(x_i)) the online projection, q the predictor, z̄_i = ḡ(f̄(x_i)) the target
projection from the EMA copy ξ ← τ ξ + (1 − τ) θ, with τ rising from 0.996 to 1 on a
cosine (the trainer does the update with `losses.byol_tau`; `loss.ema_base` is τ_0).
The two views use BYOL's asymmetric policies (`augment.policy`, `augment.policy2`).
"""

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from steerjax import losses
from steerjax.methods import common
from steerjax.methods.base import Method


class BYOLModel(nn.Module):
  encoder: nn.Module
  projector: nn.Module
  predictor: nn.Module

  def __call__(self, inputs, train: bool):
    z = self.projector(self.encoder(jnp.concatenate([inputs["view1"], inputs["view2"]]), train),
                       train)
    q1, q2 = jnp.split(self.predictor(z, train), 2)
    return {"q1": q1, "q2": q2}

  def target(self, inputs, train: bool):
    """Projections of both views; applied with the EMA parameters by the trainer."""
    z = self.projector(self.encoder(jnp.concatenate([inputs["view1"], inputs["view2"]]), train),
                       train)
    z1, z2 = jnp.split(z, 2)
    return {"z1": z1, "z2": z2}

  def embed(self, x):
    return self.encoder(x, train=False)


def symmetrised_byol(q1, q2, z1_target, z2_target):
  """Each view's prediction regresses the *other* view's target projection."""
  return losses.byol_loss(q1, z2_target) + losses.byol_loss(q2, z1_target)


@dataclasses.dataclass(frozen=True)
class BYOL(Method):
  uses_target: bool = True

  def build_model(self) -> nn.Module:
    return BYOLModel(common.encoder(self.config), common.projector(self.config),
                     common.predictor(self.config))

  def make_inputs(self, batch, rng):
    v1, v2, _ = common.view_pair(self, batch, rng)
    return {"view1": v1, "view2": v2}

  def loss(self, outputs, inputs, target_outputs, step):
    del inputs, step
    loss = symmetrised_byol(outputs["q1"], outputs["q2"], target_outputs["z1"],
                            target_outputs["z2"])
    return loss, {"byol": loss}
