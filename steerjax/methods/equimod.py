"""EquiMod (Devillers & Lefort, ICLR 2023, arXiv 2211.01244).

    L = L_inv(z1, z2) + λ · NT-Xent([y1 ; y2], [ŷ1 ; ŷ2]; τ_y),   ŷ_i = u(y0, p_i)

Three images per sample: the original x0 (plain resize) and two augmented views x1, x2
with standardised parameter vectors p1, p2. h = f(x) the backbone; z_i the invariant
branch (SimCLR projector with L_inv = NT-Xent(z1, z2; τ), or BYOL projector, predictor
and EMA target with the symmetrised BYOL loss); y = e(h) the equivariant head
(h → 2048 → 2048 → 128, last BN without affine) and u the predictor
BN(Linear([y0 ; BN(Linear(p))])) that predicts each view's y from the *original* image.
L_equi is NT-Xent over the 2B pairs (y_i, ŷ_i), the other view of the same image being a
negative; λ = 1, τ_y = 0.2 (`loss.equi_weight`, `loss.equi_temperature`). As in the
official code the equivariant targets y_i come from the online network (the EMA copy only
serves BYOL's invariant term) and the predictor sees [y0 ; y0] and [p1 ; p2] as one batch.

`EquiModPairs` is SIE's EquiMod baseline on 3DIEBench (Garrido et al., 2023): no x0; two
rendered views, invariant and equivariant projectors on the whole representation, and the
predictor (`config.steerer`, SIE's linear hypernetwork) maps y1 to ŷ2 given the rendered
transformation g: L = NT-Xent(z1, z2; τ) + λ NT-Xent(ŷ2, y2; τ_y).
"""

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from steerjax import losses
from steerjax import steerers
from steerjax.methods import common
from steerjax.methods.base import Method
from steerjax.methods.byol import symmetrised_byol
from steerjax.models import heads


def equivariant_head(config) -> heads.MLPHead:
  h = config.head
  return heads.MLPHead((h.equi_hidden,) * h.equi_layers, h.equi_dim, output="bn")


class EquiModModel(nn.Module):
  encoder: nn.Module
  inv_projector: nn.Module
  equi_head: nn.Module
  equi_predictor: nn.Module
  inv_predictor: nn.Module | None = None  # BYOL's q; None for SimCLR

  def __call__(self, inputs, train: bool):
    h = self.encoder(jnp.concatenate([inputs["x0"], inputs["view1"], inputs["view2"]]), train)
    batch = inputs["x0"].shape[0]
    z = self.inv_projector(h[batch:], train)  # the invariant term sees the views only
    if self.inv_predictor is not None:
      z = self.inv_predictor(z, train)
    y0, y = jnp.split(self.equi_head(h, train), [batch])
    y_hat = self.equi_predictor(jnp.concatenate([y0, y0]),
                                jnp.concatenate([inputs["p1"], inputs["p2"]]), train=train)
    inv1, inv2 = jnp.split(z, 2)
    return {"inv1": inv1, "inv2": inv2, "y": y, "y_hat": y_hat}

  def target(self, inputs, train: bool):
    """BYOL's target projections of the two views (EMA parameters)."""
    h = self.encoder(jnp.concatenate([inputs["view1"], inputs["view2"]]), train)
    z1, z2 = jnp.split(self.inv_projector(h, train), 2)
    return {"z1": z1, "z2": z2}

  def embed(self, x):
    return self.encoder(x, train=False)

  def steer_embed(self, x):
    return self.equi_head(self.encoder(x, train=False), train=False)

  def steer(self, z, g):
    return self.equi_predictor(z, g, train=False)


@dataclasses.dataclass(frozen=True)
class EquiModSimCLR(Method):
  transform_source: str | None = "augment"

  def build_model(self) -> nn.Module:
    c = self.config
    predictor = steerers.EquiModPredictor(c.head.equi_dim, self.g_dim())
    return EquiModModel(common.encoder(c), common.projector(c), equivariant_head(c), predictor,
                        self.inv_predictor())

  def inv_predictor(self) -> nn.Module | None:
    return None

  def make_inputs(self, batch, rng):
    v1, v2, extras = common.view_pair(self, batch, rng)
    return {"x0": self.original(batch), "view1": v1, "view2": v2, **extras}

  def invariant_loss(self, outputs, target_outputs):
    return losses.nt_xent(outputs["inv1"], outputs["inv2"], self.config.loss.temperature)

  def loss(self, outputs, inputs, target_outputs, step):
    del inputs, step
    c = self.config.loss
    inv = self.invariant_loss(outputs, target_outputs)
    equi = losses.nt_xent(outputs["y"], outputs["y_hat"], c.equi_temperature)
    return inv + c.equi_weight * equi, {"invariant": inv, "equivariant": equi}


@dataclasses.dataclass(frozen=True)
class EquiModBYOL(EquiModSimCLR):
  uses_target: bool = True

  def inv_predictor(self) -> nn.Module | None:
    return common.predictor(self.config)

  def invariant_loss(self, outputs, target_outputs):
    return symmetrised_byol(outputs["inv1"], outputs["inv2"], target_outputs["z1"],
                            target_outputs["z2"])


class EquiModPairsModel(nn.Module):
  encoder: nn.Module
  inv_projector: nn.Module
  equi_projector: nn.Module
  steerer: nn.Module

  def __call__(self, inputs, train: bool):
    h = self.encoder(jnp.concatenate([inputs["view1"], inputs["view2"]]), train)
    z1, z2 = jnp.split(self.inv_projector(h, train), 2)
    y1, y2 = jnp.split(self.equi_projector(h, train), 2)
    return {"z1": z1, "z2": z2, "y1": y1, "y2": y2,
            "y2_hat": self.steerer(y1, inputs["g"], train=train)}

  def embed(self, x):
    return self.encoder(x, train=False)

  def steer_embed(self, x):
    return self.equi_projector(self.encoder(x, train=False), train=False)

  def steer(self, z, g):
    return self.steerer(z, g, train=False)


@dataclasses.dataclass(frozen=True)
class EquiModPairs(common.RenderedPairMethod):

  def build_model(self) -> nn.Module:
    c = self.config
    return EquiModPairsModel(common.encoder(c), common.projector(c), common.projector(c),
                             common.steerer(c, c.head.proj_dim, self.g_dim()))

  def loss(self, outputs, inputs, target_outputs, step):
    del inputs, target_outputs, step
    c = self.config.loss
    inv = losses.nt_xent(outputs["z1"], outputs["z2"], c.temperature)
    equi = losses.nt_xent(outputs["y2_hat"], outputs["y2"], c.equi_temperature)
    return inv + c.equi_weight * equi, {"invariant": inv, "equivariant": equi}
