"""MLP projection/prediction heads (SimCLR, BYOL, EquiMod, VICReg/SIE)."""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


def _batch_norm(train: bool, affine: bool = True) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      use_scale=affine, use_bias=affine)


class MLPHead(nn.Module):
  """(Dense -> BN -> ReLU) per hidden width, then Dense -> optional BN.

  Dense layers followed by BN have no bias (BN's shift makes it redundant).
  Paper settings: SimCLR/EquiMod projector `MLPHead((2048, 2048), 128,
  last_bn=True, last_bn_affine=False)`; BYOL projector and predictor
  `MLPHead((4096,), 256, last_bn=False)`; VICReg/SIE projector
  `MLPHead((1024, 1024), 1024, last_bn=False)`.
  """
  hidden_dims: Sequence[int]
  out_dim: int
  last_bn: bool = True
  last_bn_affine: bool = False

  @nn.compact
  def __call__(self, x, train: bool):
    x = x.astype(jnp.float32)
    for width in self.hidden_dims:
      x = nn.Dense(width, use_bias=False)(x)
      x = nn.relu(_batch_norm(train)(x))
    x = nn.Dense(self.out_dim, use_bias=not self.last_bn)(x)
    if self.last_bn:
      x = _batch_norm(train, affine=self.last_bn_affine)(x)
    return x
