"""MLP projection/prediction heads (SimCLR, BYOL, EquiMod, VICReg/SIE)."""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


def _batch_norm(train: bool, affine: bool = True) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      use_scale=affine, use_bias=affine)


OUTPUTS = ("bn", "linear", "linear_bias")


class MLPHead(nn.Module):
  """(Dense -> BN -> ReLU) per hidden width, then the output layer.

  Dense layers followed by BN have no bias (BN's shift makes it redundant). `output` is the
  last layer, as each paper's code has it: "bn" = Dense -> BN without affine (SimCLR,
  EquiMod), "linear" = Dense without bias (the VICReg/SIE code's Projector, used by every
  3DIEBench baseline), "linear_bias" = Dense with bias (BYOL's MLP, classifiers).
  """
  hidden_dims: Sequence[int]
  out_dim: int
  output: str = "bn"

  @nn.compact
  def __call__(self, x, train: bool):
    if self.output not in OUTPUTS:
      raise ValueError(f"MLPHead.output={self.output!r}; expected one of {OUTPUTS}")
    x = x.astype(jnp.float32)
    for width in self.hidden_dims:
      x = nn.Dense(width, use_bias=False)(x)
      x = nn.relu(_batch_norm(train)(x))
    x = nn.Dense(self.out_dim, use_bias=self.output == "linear_bias")(x)
    if self.output == "bn":
      x = _batch_norm(train, affine=False)(x)
    return x
