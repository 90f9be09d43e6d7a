"""A small MLP-Mixer encoder (Tolstikhin et al., NeurIPS 2021) with per-layer features.

Patches are embedded as in `vit`; each block mixes tokens with an MLP across positions (one
dense map over all H/p·W/p tokens, shared by channels) and then channels with an MLP per token.
Channel mixing commutes with any shift of the token grid; token mixing does not unless its
weights happen to be circulant, so the Mixer has no built-in translation equivariance beyond
the patch embedding's (shifts by multiples of p) — the weakest inductive bias of the three
encoder families. Sown layers are [B, H/p, W/p, width] maps of stride p; the output is the mean
of the final tokens.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from steerjax.models import vit


class MixerBlock(nn.Module):
  """x + token-MLP(LN x) across positions, then x + channel-MLP(LN x) per token."""
  tokens_hidden: int
  channels_hidden: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):  # [B, tokens, channels]
    y = vit.layer_norm(self.dtype)(x).swapaxes(1, 2)
    x = x + vit.mlp(y, self.tokens_hidden, self.dtype).swapaxes(1, 2)
    return x + vit.mlp(vit.layer_norm(self.dtype)(x), self.channels_hidden, self.dtype)


class Mixer(nn.Module):
  """`__call__(x [B,H,W,3] in [0,1], train) -> float32 [B, width]`; H, W multiples of p.

  Sows `patches` and `block1`..`blockN`. Hidden widths follow Mixer-S (token MLP width/2,
  channel MLP 4·width). `train` is accepted for the encoder interface; no batch statistics.
  """
  width: int = 64
  depth: int = 6
  patch_size: int = 4
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
    x = vit.patch_embed(vit.normalise(x, self.dtype), self.width, self.patch_size, self.dtype)
    self.sow("intermediates", "patches", x)
    batch, h, w, c = x.shape
    tokens = x.reshape(batch, h * w, c)
    for i in range(self.depth):
      tokens = MixerBlock(max(8, c // 2), 4 * c, self.dtype)(tokens)
      self.sow("intermediates", f"block{i + 1}", tokens.reshape(batch, h, w, c))
    return jnp.mean(vit.layer_norm(self.dtype)(tokens).astype(jnp.float32), axis=1)
