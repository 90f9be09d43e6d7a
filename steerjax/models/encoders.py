"""Encoders by `config.model.name`: the ResNets (also the official SIE code's variant, for
converted checkpoints) and the small ViT and MLP-Mixer.

Every encoder maps [B, H, W, 3] images in [0, 1] to float32 [B, feature_dim], exposes
`feature_dim` before init, and sows per-layer feature maps with their `strides`, so methods,
probes and the learned-equivariance measures treat them alike.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from steerjax.models import mixer
from steerjax.models import resnet
from steerjax.models import sie_resnet
from steerjax.models import vit

ENCODERS = (*resnet.ARCHITECTURES, *sie_resnet.ARCHITECTURES, "vit", "mixer")


def transformer_width(width_multiplier: float) -> int:
  """ViT/Mixer token width: 256 × multiplier in steps of 32 (at least 32), so that
  `model.width_multiplier` ×0.125 … ×1 spans 32 … 256 as it spans the ResNet's 8 … 64."""
  return max(32, 32 * round(8 * width_multiplier))


def get_encoder(name: str, width_multiplier: float = 1.0, cifar_stem: bool = False,
                patch_size: int = 4, dtype: Any = jnp.float32) -> nn.Module:
  """`cifar_stem` applies to ResNets, `patch_size` to the ViT and Mixer."""
  if name == "vit":
    width = transformer_width(width_multiplier)
    return vit.ViT(width, heads=width // 32, patch_size=patch_size, dtype=dtype)
  if name == "mixer":
    return mixer.Mixer(transformer_width(width_multiplier), patch_size=patch_size, dtype=dtype)
  if name in sie_resnet.ARCHITECTURES:
    if cifar_stem:
      raise ValueError(f"{name} has the SIE code's 7x7 stem; model.cifar_stem must be False")
    return sie_resnet.get_encoder(name, width_multiplier, dtype)
  if name not in resnet.ARCHITECTURES:
    raise ValueError(f"Unknown encoder {name!r}; choose from {', '.join(ENCODERS)}.")
  return resnet.get_encoder(name, width_multiplier, cifar_stem, dtype)
