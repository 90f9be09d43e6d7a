"""Supervised baseline: cross-entropy on augmented views.

    L = CE(W f(x̃), y),   x̃ an augmentation of x (the `augment.policy`)

The linear classifier W sits on the encoder representation f, so the probe-free
accuracy of the trained head and the frozen-feature probes measure the same space.
"""

import dataclasses

import flax.linen as nn
import jax.numpy as jnp
import optax

from steerjax import augment
from steerjax.methods import common
from steerjax.methods.base import Method
from steerjax.models import heads


class SupervisedModel(nn.Module):
  encoder: nn.Module
  classifier: nn.Module

  def __call__(self, inputs, train: bool):
    return {"logits": self.classifier(self.encoder(inputs["view"], train), train)}

  def embed(self, x):
    return self.encoder(x, train=False)


@dataclasses.dataclass(frozen=True)
class Supervised(Method):

  def build_model(self) -> nn.Module:
    classifier = heads.MLPHead((), self.num_classes, output="linear_bias")
    return SupervisedModel(common.encoder(self.config), classifier)

  def make_inputs(self, batch, rng):
    view, _ = augment.augment_batch(self.policy(), rng, batch["image"], self.image_size)
    return {"view": view, "label": batch["label"]}

  def loss(self, outputs, inputs, target_outputs, step):
    del target_outputs, step
    logits = outputs["logits"]
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, inputs["label"]).mean()
    accuracy = jnp.mean(jnp.argmax(logits, -1) == inputs["label"])
    return loss, {"cross_entropy": loss, "train_accuracy": accuracy}
