"""A small Vision Transformer encoder (Dosovitskiy et al., ICLR 2021) with per-layer features.

Non-overlapping p×p patches are embedded by one stride-p convolution, learned absolute
position embeddings are added, and pre-LayerNorm transformer blocks follow; the output is the
mean of the final tokens (no class token), so every sown layer is a [B, H/p, W/p, width] map
of stride p and the learned-equivariance measures apply as to a ResNet. What the architecture
implies: the patch embedding is exactly equivariant to translations by multiples of p
(circular shifts), the blocks are permutation-equivariant over tokens, and only the position
embeddings tie a token to its place, so any translation equivariance of later layers beyond
the patch grid is learned or lost through them (Bruintjes et al.'s "inductive bias" factor).
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from steerjax.models import resnet


def normalise(x, dtype):
  """ImageNet mean/std normalisation of [0, 1] images, as every steerjax encoder does."""
  mean = jnp.asarray(resnet.IMAGENET_MEAN, jnp.float32)
  std = jnp.asarray(resnet.IMAGENET_STD, jnp.float32)
  return ((x.astype(jnp.float32) - mean) / std).astype(dtype)


def patch_embed(x, width: int, patch: int, dtype: Any):
  """[B, H, W, 3] -> [B, H/p, W/p, width] by a p×p stride-p convolution."""
  return nn.Conv(width, (patch, patch), strides=(patch, patch), padding="VALID", dtype=dtype,
                 param_dtype=jnp.float32, name="patch_embed")(x)


def mlp(x, hidden: int, dtype: Any):
  out = x.shape[-1]
  x = nn.gelu(nn.Dense(hidden, dtype=dtype, param_dtype=jnp.float32)(x))
  return nn.Dense(out, dtype=dtype, param_dtype=jnp.float32)(x)


def layer_norm(dtype: Any):
  return nn.LayerNorm(dtype=dtype, param_dtype=jnp.float32)


class Block(nn.Module):
  """Pre-LN transformer block: x + MHA(LN x), then x + MLP(LN x)."""
  heads: int
  mlp_ratio: int = 4
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = layer_norm(self.dtype)(x)
    x = x + nn.MultiHeadDotProductAttention(self.heads, dtype=self.dtype,
                                            param_dtype=jnp.float32)(y, y)
    return x + mlp(layer_norm(self.dtype)(x), self.mlp_ratio * x.shape[-1], self.dtype)


class ViT(nn.Module):
  """`__call__(x [B,H,W,3] in [0,1], train) -> float32 [B, width]`; H, W multiples of p.

  Sows `patches` (the patch embedding, before position embeddings) and `block1`..`blockN`.
  `train` is accepted for the encoder interface; the model has no batch statistics.
  """
  width: int = 64
  depth: int = 6
  heads: int = 2
  patch_size: int = 4
  mlp_ratio: int = 4
  dtype: Any = jnp.float32

  @property
  def feature_dim(self) -> int:
    return self.width

  @property
  def strides(self) -> dict[str, int]:
    names = ("patches",) + tuple(f"block{i + 1}" for i in range(self.depth))
    return {name: self.patch_size for name in names}

  @nn.compact
  def __call__(self, x, train: bool):
    del train
    x = patch_embed(normalise(x, self.dtype), self.width, self.patch_size, self.dtype)
    self.sow("intermediates", "patches", x)
    batch, h, w, c = x.shape
    x = x + self.param("pos_embed", nn.initializers.normal(0.02), (1, h, w, c)).astype(self.dtype)
    tokens = x.reshape(batch, h * w, c)
    for i in range(self.depth):
      tokens = Block(self.heads, self.mlp_ratio, self.dtype)(tokens)
      self.sow("intermediates", f"block{i + 1}", tokens.reshape(batch, h, w, c))
    return jnp.mean(layer_norm(self.dtype)(tokens).astype(jnp.float32), axis=1)
