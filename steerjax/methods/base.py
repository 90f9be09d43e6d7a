"""The contract between a method and the shared trainer and evaluator.

A method contributes three things and nothing else: its Flax model, how the
per-step inputs are built *on device* from the uint8 batch (augmentation lives
here, so its parameters are exact), and its loss. The trainer owns sharding,
the optimiser, the EMA target, checkpoints and logging, so every method is
trained on equal terms.

The model returned by `build_model` must provide:
  __call__(inputs, train) -> dict   everything the loss needs;
  encoder                           the backbone submodule (attribute name `encoder`);
  embed(x) -> [B, d]                the representation evaluated by probes;
  steer_embed(x) -> [B, d']         the embedding the steerer/predictor acts on
                                    (absent if the method has none);
  steer(z, g) -> [B, d']            the steerer/predictor ρ(g) z (ditto);
  target(inputs, train) -> dict     the EMA target branch, if `uses_target`.
"""

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from steerjax import augment

Batch = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class EvalFunctions:
  """Pure functions of `(variables, ...)` that evaluators call, inference-mode BatchNorm.

  A field is None where the method has no such piece, so an evaluator asks "is there a
  steerer?" by looking, not through a flag. `steer_basis`/`steer_combine` exist for steerers
  linear in g (ρ(g) z = c(z, Σ_k g_k A_k z)): steered TTA then computes the k products once.
  """
  embed: Callable  # (variables, x [B,H,W,3]) -> [B, d], the representation probes read
  steer_embed: Callable | None = None  # (variables, x) -> [B, d'], what the steerer acts on
  steer: Callable | None = None  # (variables, z [B,d'], g [B,k]) -> [B, d']
  steer_basis: Callable | None = None  # (variables, z) -> [B, k, d']
  steer_combine: Callable | None = None  # (variables, z, basis, g) -> [B, d']


@dataclasses.dataclass(frozen=True)
class Method:
  """Base class; subclasses override the marked methods.

  Attributes:
    config: the full experiment config (read-only).
    num_classes: number of labels in the training set.
  """

  config: ml_collections.ConfigDict
  num_classes: int

  # The loader serves two rendered views of one object with their relative
  # transformation (SIE-style data) instead of single images.
  needs_pairs: bool = False
  # The trainer keeps an EMA copy of the parameters and calls `model.target`.
  uses_target: bool = False
  # How the conditioning g of the steerer/predictor is made at evaluation:
  # "augment" — g encodes sampled augmentation parameters, source is the plain
  #   resized image and target its augmented view;
  # "pairs" — g is the rendered relative transformation between two views;
  # None — the method has no steerer.
  transform_source: str | None = None
  # The steerer acts on the representation `embed` itself (not a head's output), so a probe
  # trained on representations can classify steered embeddings: steered TTA applies.
  steers_representation: bool = False

  def build_model(self) -> nn.Module:
    raise NotImplementedError

  def make_inputs(self, batch: Batch, rng: jax.Array) -> Batch:
    """Builds the model inputs from a (global) uint8 batch, inside jit."""
    raise NotImplementedError

  def loss(self, outputs: Batch, inputs: Batch, target_outputs: Batch | None,
           step: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Returns the scalar loss and a dict of named terms to log."""
    raise NotImplementedError

  @property
  def representation_parts(self) -> tuple[tuple[str, slice], ...]:
    """Named slices of the representation evaluated separately (SIE: invariant/equivariant half)."""
    return ()

  def eval_functions(self, model: nn.Module) -> EvalFunctions:
    """The model's evaluation entry points (see `EvalFunctions`)."""

    def bound(name):
      if not hasattr(model, name):
        return None
      return lambda variables, *args: model.apply(variables, *args, method=name)

    basis = None
    steerer = getattr(model, "steerer", None)
    if self.steers_representation and hasattr(steerer, "basis_apply"):
      basis = (lambda v, z: model.apply(v, z, method=lambda m, z_: m.steerer.basis_apply(z_)),
               lambda v, z, b, g: model.apply(
                   v, z, b, g, method=lambda m, z_, b_, g_: m.steerer.combine(z_, b_, g_)))
    return EvalFunctions(embed=bound("embed"),
                         steer_embed=bound("steer_embed") if self.transform_source else None,
                         steer=bound("steer") if self.transform_source else None,
                         steer_basis=basis and basis[0], steer_combine=basis and basis[1])

  # Shared helpers -----------------------------------------------------------

  @property
  def image_size(self) -> int:
    """Side of the views the encoder sees (the stored images may be larger)."""
    return self.config.augment.size or self.config.data.image_size

  def view_policies(self) -> tuple[augment.Policy, augment.Policy]:
    """(view 1, view 2) policies: a pair ("byol") splits; else `augment.policy2` or policy."""
    first = augment.get_policy(self.config.augment.policy)
    if isinstance(first, tuple):
      return first
    second = self.config.augment.policy2
    return first, augment.get_policy(second) if second else first

  def policy(self) -> augment.Policy:
    """View 1's policy: the one single-view methods and evaluators use."""
    return self.view_policies()[0]

  def g_dim(self) -> int:
    """Width of the conditioning vector g for this method's steerer."""
    if self.transform_source == "pairs":
      return 6 if self.config.steerer.use_colour else 4
    return self.policy().param_dim

  def pair_transform(self, batch: Batch) -> jax.Array:
    """The rendered relative transformation view 1 -> view 2, as g."""
    return batch["transform"][:, : self.g_dim()].astype(jnp.float32)

  def two_views(self, batch: Batch, rng: jax.Array) -> tuple[Any, ...]:
    """Two independently augmented views of each image, with their encodings.

    With an asymmetric pair (BYOL's), each view uses its own policy (`view_policies`).
    """
    k1, k2 = jax.random.split(rng)
    first, second = self.view_policies()
    v1, p1 = augment.augment_batch(first, k1, batch["image"], self.image_size)
    v2, p2 = augment.augment_batch(second, k2, batch["image"], self.image_size)
    return v1, p1, v2, p2

  def original(self, batch: Batch) -> jax.Array:
    """The plain resized image x0 that EquiMod and steerers predict from."""
    return augment.resize_batch(batch["image"], self.image_size)
