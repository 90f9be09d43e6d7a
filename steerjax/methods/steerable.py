"""Steerable equivariant representation learning (Bhardwaj et al., 2023, arXiv 2302.11349).

    L = L_task(f(g1·x), f(g2·x)) + λ · ½ Σ_i ‖f(g_i·x) − ρ(g_i) f(x)‖² / ‖f(g_i·x)‖²

f is the encoder, g_i the sampled augmentation of view i (encoded as a parameter vector), x the
plain resized image and ρ(g) a steerer acting on the representation itself, so that at test time
N augmented embeddings cost one encoder pass and N steerer products. L_task is SimCLR's NT-Xent
on projections of the two views, or cross-entropy on their labels (config.task).

With `config.data.pairs` (multi-view data such as synthetic3d), view 2 augments *another
rendered view* of the object, so the task term also teaches invariance to the object's pose and
lighting, and only view 1 (an augmentation of x) has a steering term.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from steerjax import augment
from steerjax import losses
from steerjax.methods import common
from steerjax.methods.base import Method
from steerjax.models import heads


class SteerableModel(nn.Module):
  encoder: nn.Module
  steerer: nn.Module
  head: nn.Module  # projector (SimCLR task) or linear classifier (supervised task)

  def __call__(self, inputs, train: bool):
    x0, v1, v2 = inputs["x0"], inputs["view1"], inputs["view2"]
    z0, z1, z2 = jnp.split(self.encoder(jnp.concatenate([x0, v1, v2]), train), 3)
    return {
        "z1": z1, "z2": z2,
        "pred1": self.steerer(z0, inputs["g1"], train=train),
        "pred2": self.steerer(z0, inputs["g2"], train=train),
        "head1": self.head(z1, train), "head2": self.head(z2, train),
    }

  def embed(self, x):
    return self.encoder(x, train=False)

  def steer_embed(self, x):
    return self.embed(x)

  def steer(self, z, g):
    return self.steerer(z, g, train=False)


@dataclasses.dataclass(frozen=True)
class Steerable(Method):
  transform_source: str | None = "augment"
  steers_representation: bool = True

  def build_model(self) -> nn.Module:
    encoder = common.encoder(self.config)
    if self.config.task == "simclr":
      head = common.projector(self.config)
    else:
      head = heads.MLPHead((), self.num_classes, output="linear_bias")
    steerer = common.steerer(self.config, encoder.feature_dim, self.g_dim())
    return SteerableModel(encoder, steerer, head)

  def __post_init__(self):
    object.__setattr__(self, "needs_pairs", common.uses_pairs(self.config))

  def make_inputs(self, batch, rng):
    k1, k2 = jax.random.split(rng)
    first, second = self.view_policies()
    v1, g1 = augment.augment_batch(first, k1, batch["image"], self.image_size)
    v2, g2 = augment.augment_batch(second, k2, batch["image2" if self.needs_pairs else "image"],
                                   self.image_size)
    return {"x0": self.original(batch), "view1": v1, "view2": v2, "g1": g1, "g2": g2,
            "label": batch["label"]}

  def loss(self, outputs, inputs, target_outputs, step):
    del target_outputs, step
    if self.config.task == "simclr":
      task = losses.nt_xent(outputs["head1"], outputs["head2"], self.config.loss.temperature)
    else:
      labels = jnp.concatenate([inputs["label"], inputs["label"]])
      logits = jnp.concatenate([outputs["head1"], outputs["head2"]])
      task = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    steer = losses.steering_loss(outputs["pred1"], outputs["z1"])
    if not self.needs_pairs:  # view 2 is an augmentation of x too
      steer = 0.5 * (steer + losses.steering_loss(outputs["pred2"], outputs["z2"]))
    loss = task + self.config.loss.steer_weight * steer
    return loss, {"task": task, "steer": steer}
