"""SimCLR + AugSelf (Lee et al., NeurIPS 2021, arXiv 2111.09613).

    L = NT-Xent(z1, z2; τ) + w · MSE(φ([f(x1) ; f(x2)]), ω(x1, x2))

An auxiliary MLP φ on the concatenated representations of the two views regresses what
separates them, ω: the differences of their augmentation parameters (`augment.relative`,
e.g. crop centre/size and colour-jitter factor deltas), or on rendered pairs
(`data.pairs`, SIE's 3DIEBench baseline) the relative transformation g. Predicting ω forces
f to keep the information the augmentations would otherwise teach it to discard.
φ is SIE's: Linear(2d→k) ReLU Linear(k→k) ReLU Linear(k→|ω|), k = `head.augself_hidden`
(0: 2d); w = `loss.augself_weight`.
"""

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from steerjax import augment
from steerjax import losses
from steerjax.methods import common
from steerjax.methods.base import Method


class AugSelfHead(nn.Module):
  hidden: int  # 0: twice the input width, as SIE's baseline

  @nn.compact
  def __call__(self, h_pair, out_dim: int):
    width = self.hidden or h_pair.shape[-1]
    x = nn.relu(nn.Dense(width)(h_pair))
    x = nn.relu(nn.Dense(width)(x))
    return nn.Dense(out_dim)(x)


class AugSelfModel(nn.Module):
  encoder: nn.Module
  projector: nn.Module
  aug_head: nn.Module

  def __call__(self, inputs, train: bool):
    h = self.encoder(jnp.concatenate([inputs["view1"], inputs["view2"]]), train)
    z1, z2 = jnp.split(self.projector(h, train), 2)
    h1, h2 = jnp.split(h, 2)
    omega_hat = self.aug_head(jnp.concatenate([h1, h2], axis=-1), inputs["omega"].shape[-1])
    return {"z1": z1, "z2": z2, "omega_hat": omega_hat}

  def embed(self, x):
    return self.encoder(x, train=False)


@dataclasses.dataclass(frozen=True)
class AugSelf(Method):

  def __post_init__(self):
    object.__setattr__(self, "needs_pairs", common.uses_pairs(self.config))

  def build_model(self) -> nn.Module:
    c = self.config
    return AugSelfModel(common.encoder(c), common.projector(c),
                        AugSelfHead(c.head.augself_hidden))

  def make_inputs(self, batch, rng):
    v1, v2, extras = common.view_pair(self, batch, rng, with_params=True)
    if self.needs_pairs:
      omega = extras["g"]
    else:
      omega = augment.relative(extras["params1"], extras["params2"])
    return {"view1": v1, "view2": v2, "omega": omega.astype(jnp.float32)}

  def loss(self, outputs, inputs, target_outputs, step):
    del target_outputs, step
    c = self.config.loss
    contrastive = losses.nt_xent(outputs["z1"], outputs["z2"], c.temperature)
    aug = jnp.mean(jnp.square(outputs["omega_hat"] - inputs["omega"]))
    return contrastive + c.augself_weight * aug, {"nt_xent": contrastive, "augself": aug}
