"""Pieces several methods share: where the two views come from, projectors, steerers.

Two views for a joint-embedding loss come from one of two places:
  * augmentation (the ImageNet/CIFAR papers): two sampled augmentations of
    `batch["image"]`, with their standardised parameter vectors p1, p2;
  * rendered pairs (SIE's 3DIEBench protocol, `config.data.pairs` or a method
    that always needs them): `batch["image"]` and `batch["image2"]`, two views of
    one object, each passed through the augmentation policy ("none" in SIE: a
    plain resize), and g the rendered transformation view 1 -> view 2.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from steerjax import augment
from steerjax import steerers
from steerjax.methods.base import Batch, Method
from steerjax.models import heads
from steerjax.models import encoders


class TwoViewModel(nn.Module):
  """Encoder + projector on two views in one batch: the model of SimCLR and VICReg."""
  encoder: nn.Module
  projector: nn.Module

  def __call__(self, inputs, train: bool):
    h = self.encoder(jnp.concatenate([inputs["view1"], inputs["view2"]]), train)
    z1, z2 = jnp.split(self.projector(h, train), 2)
    return {"z1": z1, "z2": z2}

  def embed(self, x):
    return self.encoder(x, train=False)


@dataclasses.dataclass(frozen=True)
class TwoViewMethod(Method):
  """Plumbing of a joint-embedding method on two views; subclasses write only the loss."""

  def __post_init__(self):
    object.__setattr__(self, "needs_pairs", uses_pairs(self.config))

  def build_model(self) -> nn.Module:
    return TwoViewModel(encoder(self.config), projector(self.config))

  def make_inputs(self, batch, rng):
    v1, v2, _ = view_pair(self, batch, rng)
    return {"view1": v1, "view2": v2}


@dataclasses.dataclass(frozen=True)
class RenderedPairMethod(Method):
  """A method trained on two rendered views of one object and the transformation g from view 1
  to view 2 (SIE, EquiMod on view pairs); subclasses write the model and the loss."""
  needs_pairs: bool = True
  transform_source: str | None = "pairs"

  def make_inputs(self, batch, rng):
    v1, v2, extras = view_pair(self, batch, rng)
    return {"view1": v1, "view2": v2, "g": extras["g"]}


def encoder(config: ml_collections.ConfigDict):
  m = config.model
  return encoders.get_encoder(m.name, m.width_multiplier, m.cifar_stem, m.patch_size,
                              dtype=jnp.dtype(m.dtype))


def projector(config: ml_collections.ConfigDict) -> heads.MLPHead:
  """`head.proj_layers` hidden layers of `head.proj_hidden`, then `head.proj_dim` as
  `head.proj_output`."""
  h = config.head
  return heads.MLPHead((h.proj_hidden,) * h.proj_layers, h.proj_dim, output=h.proj_output)


def predictor(config: ml_collections.ConfigDict) -> heads.MLPHead:
  """BYOL's predictor: proj_dim -> pred_hidden -> proj_dim."""
  return heads.MLPHead((config.head.pred_hidden,), config.head.proj_dim, output="linear_bias")


def steerer(config: ml_collections.ConfigDict, dim: int, g_dim: int):
  """`config.steerer.name` acting on `dim`-d embeddings, conditioned on `g_dim` numbers."""
  kwargs: dict[str, Any] = {}
  if config.steerer.name == "hyper_mlp":
    kwargs["hidden"] = (config.steerer.hidden,)
  return steerers.get_steerer(config.steerer.name, dim, g_dim, **kwargs)


def uses_pairs(config: ml_collections.ConfigDict) -> bool:
  return bool(config.data.pairs)


def view_pair(method: Method, batch: Batch, rng: jax.Array, with_params: bool = False):
  """(view1, view2, extras): the two views of the loss, from augmentation or rendered pairs.

  extras holds `p1`, `p2` (parameter encodings) in augmentation mode, plus the raw
  parameters `params1`, `params2` when `with_params`; and `g` (the rendered
  transformation) in pairs mode.
  """
  size = method.image_size
  if method.needs_pairs:
    k1, k2 = jax.random.split(rng)
    first, second = method.view_policies()
    v1, _ = augment.augment_batch(first, k1, batch["image"], size)
    v2, _ = augment.augment_batch(second, k2, batch["image2"], size)
    return v1, v2, {"g": method.pair_transform(batch)}
  if with_params:
    k1, k2 = jax.random.split(rng)
    first, second = method.view_policies()
    v1, p1, params1 = augment.augment_batch_with_params(first, k1, batch["image"], size)
    v2, p2, params2 = augment.augment_batch_with_params(second, k2, batch["image"], size)
    return v1, v2, {"p1": p1, "p2": p2, "params1": params1, "params2": params2}
  v1, p1, v2, p2 = method.two_views(batch, rng)
  return v1, v2, {"p1": p1, "p2": p2}
