"""ResNet-18/50 encoders (torchvision layout) returning pooled features.

Inputs are float images in [0, 1]; ImageNet mean/std normalisation happens
inside so every caller feeds the same thing. Feature maps are sown into the
`intermediates` collection (`stem`, `stage1`..`stage4`) for per-layer
equivariance measures; `strides` gives their total stride relative to the input.

BatchNorm uses `use_running_average=not train`. Under `jax.jit` with the batch
axis sharded over a mesh, the batch statistics are reductions over the global
array, so this is synchronised BatchNorm with no axis names.
"""

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STAGE_NAMES = ("stage1", "stage2", "stage3", "stage4")

# torchvision initialises convolutions with kaiming_normal(mode="fan_out").
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _batch_norm(train: bool, dtype: Any, zero_scale: bool = False) -> nn.BatchNorm:
  # momentum 0.9 here equals PyTorch's momentum=0.1 (the weight of the new batch).
  return nn.BatchNorm(
      use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
      param_dtype=jnp.float32,
      scale_init=nn.initializers.zeros if zero_scale else nn.initializers.ones)


def _conv(features: int, kernel: int, stride: int, dtype: Any) -> nn.Conv:
  # Symmetric padding k // 2, as PyTorch, so strided layers see the same pixels.
  pad = kernel // 2
  return nn.Conv(
      features, (kernel, kernel), strides=(stride, stride),
      padding=((pad, pad), (pad, pad)), use_bias=False, dtype=dtype,
      param_dtype=jnp.float32, kernel_init=conv_init)


class BasicBlock(nn.Module):
  """Two 3x3 convolutions; the last BN scale starts at zero (identity block)."""
  features: int
  stride: int = 1
  dtype: Any = jnp.float32
  expansion = 1

  @nn.compact
  def __call__(self, x, train: bool):
    residual = x
    y = _conv(self.features, 3, self.stride, self.dtype)(x)
    y = nn.relu(_batch_norm(train, self.dtype)(y))
    y = _conv(self.features, 3, 1, self.dtype)(y)
    y = _batch_norm(train, self.dtype, zero_scale=True)(y)
    if residual.shape != y.shape:
      residual = _conv(self.features, 1, self.stride, self.dtype)(residual)
      residual = _batch_norm(train, self.dtype)(residual)
    return nn.relu(y + residual)


class Bottleneck(nn.Module):
  """1x1 -> 3x3 (strided, ResNet v1.5) -> 1x1 with 4x expansion."""
  features: int
  stride: int = 1
  dtype: Any = jnp.float32
  expansion = 4

  @nn.compact
  def __call__(self, x, train: bool):
    residual = x
    y = _conv(self.features, 1, 1, self.dtype)(x)
    y = nn.relu(_batch_norm(train, self.dtype)(y))
    y = _conv(self.features, 3, self.stride, self.dtype)(y)
    y = nn.relu(_batch_norm(train, self.dtype)(y))
    y = _conv(self.features * self.expansion, 1, 1, self.dtype)(y)
    y = _batch_norm(train, self.dtype, zero_scale=True)(y)
    if residual.shape != y.shape:
      residual = _conv(self.features * self.expansion, 1, self.stride, self.dtype)(residual)
      residual = _batch_norm(train, self.dtype)(residual)
    return nn.relu(y + residual)


class TrunkShape:
  """Width, feature size and sown strides of a ResNet trunk, from its fields (`stage_sizes`,
  `block_cls`, `width_multiplier`, `cifar_stem`): shared by `ResNet` and the SIE code's trunk."""

  @property
  def width(self) -> int:
    """Channels of the stem and first stage: 64 x multiplier, at least 8."""
    return max(8, int(round(64 * self.width_multiplier)))

  @property
  def feature_dim(self) -> int:
    return self.width * 2 ** (len(self.stage_sizes) - 1) * self.block_cls.expansion

  @property
  def strides(self) -> dict[str, int]:
    """Total stride of each sown feature map relative to the input."""
    stem = 1 if self.cifar_stem else 4
    names = ("stem",) + STAGE_NAMES[:len(self.stage_sizes)]
    return {name: stem * 2 ** max(0, i - 1) for i, name in enumerate(names)}


class ResNet(TrunkShape, nn.Module):
  """ResNet trunk: `__call__(x [B,H,W,3] in [0,1], train) -> float32 [B, feature_dim]`.

  `cifar_stem` replaces the 7x7/2 conv + 3x3/2 max-pool by one 3x3/1 conv, as
  used for 32x32 images. `dtype` is the compute dtype (e.g. bfloat16); params
  stay float32 and the pooled features are returned in float32.
  """
  stage_sizes: Sequence[int]
  block_cls: Callable[..., nn.Module]
  width_multiplier: float = 1.0
  cifar_stem: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
    std = jnp.asarray(IMAGENET_STD, jnp.float32)
    x = ((x.astype(jnp.float32) - mean) / std).astype(self.dtype)
    if self.cifar_stem:
      x = _conv(self.width, 3, 1, self.dtype)(x)
      x = nn.relu(_batch_norm(train, self.dtype)(x))
    else:
      x = _conv(self.width, 7, 2, self.dtype)(x)
      x = nn.relu(_batch_norm(train, self.dtype)(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    self.sow("intermediates", "stem", x)
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        stride = 2 if i > 0 and j == 0 else 1
        x = self.block_cls(self.width * 2 ** i, stride, self.dtype)(x, train)
      self.sow("intermediates", STAGE_NAMES[i], x)
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


ARCHITECTURES = {
    "resnet18": ((2, 2, 2, 2), BasicBlock),
    "resnet50": ((3, 4, 6, 3), Bottleneck),
}


def get_encoder(name: str, width_multiplier: float = 1.0, cifar_stem: bool = False,
                dtype: Any = jnp.float32) -> ResNet:
  """Builds an encoder by name; `feature_dim` is available before init."""
  if name not in ARCHITECTURES:
    raise ValueError(f"Unknown encoder {name!r}; choose from {sorted(ARCHITECTURES)}.")
  stage_sizes, block_cls = ARCHITECTURES[name]
  return ResNet(stage_sizes, block_cls, width_multiplier, cifar_stem, dtype)
