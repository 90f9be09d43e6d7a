"""The ResNet of the official SIE code (facebookresearch/SIE src/resnet.py, from VICReg's), so
that its checkpoints convert exactly (`torch_weights`, archs `resnet18_sie`, `resnet50_sie`).

Its parameters have torchvision's names and shapes, but four things change the features:
  * strided layers pad after the input only: the 7x7/2 stem (2, 3), the 3x3/2 max-pool and
    3x3/2 convolutions (0, 1), as TF's 'SAME' does on even sizes (torchvision: k//2 each side);
  * a BasicBlock strides its second 3x3, not its first;
  * the first block of *every* stage has a 1x1 projection shortcut (stage 1 too, stride 1);
  * inputs are normalised with 3DIEBench's mean/std (SIE main.py), not ImageNet's.
"""

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from steerjax.models import resnet

MEAN = (0.5016, 0.5037, 0.5060)
STD = (0.1030, 0.0999, 0.0969)


def _conv(features: int, kernel: int, stride: int, dtype: Any) -> nn.Conv:
  if stride == 1:
    pad = ((kernel // 2, kernel // 2),) * 2
  else:  # total padding k - stride, the extra pixel after: (2, 3) for 7x7/2, (0, 1) for 3x3/2
    total = max(kernel - stride, 0)
    pad = ((total // 2, total - total // 2),) * 2
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=pad, use_bias=False,
                 dtype=dtype, param_dtype=jnp.float32, kernel_init=resnet.conv_init)


def _shortcut(x, features: int, stride: int, train: bool, dtype: Any):
  return resnet._batch_norm(train, dtype)(_conv(features, 1, stride, dtype)(x))  # pylint: disable=protected-access


class BasicBlockSIE(nn.Module):
  """Two 3x3 convolutions, the second strided; `project`: a 1x1 shortcut (first block of a stage)."""
  features: int
  stride: int = 1
  project: bool = False
  dtype: Any = jnp.float32
  expansion = 1

  @nn.compact
  def __call__(self, x, train: bool):
    bn = lambda zero=False: resnet._batch_norm(train, self.dtype, zero_scale=zero)  # pylint: disable=protected-access
    y = nn.relu(bn()(_conv(self.features, 3, 1, self.dtype)(x)))
    y = bn(True)(_conv(self.features, 3, self.stride, self.dtype)(y))
    residual = _shortcut(x, self.features, self.stride, train, self.dtype) if self.project else x
    return nn.relu(y + residual)


class BottleneckSIE(nn.Module):
  """1x1 -> 3x3 (strided) -> 1x1 with 4x expansion; `project` as in `BasicBlockSIE`."""
  features: int
  stride: int = 1
  project: bool = False
  dtype: Any = jnp.float32
  expansion = 4

  @nn.compact
  def __call__(self, x, train: bool):
    bn = lambda zero=False: resnet._batch_norm(train, self.dtype, zero_scale=zero)  # pylint: disable=protected-access
    y = nn.relu(bn()(_conv(self.features, 1, 1, self.dtype)(x)))
    y = nn.relu(bn()(_conv(self.features, 3, self.stride, self.dtype)(y)))
    y = bn(True)(_conv(self.features * 4, 1, 1, self.dtype)(y))
    residual = _shortcut(x, self.features * 4, self.stride, train, self.dtype) if self.project else x
    return nn.relu(y + residual)


class ResNetSIE(resnet.TrunkShape, nn.Module):
  """`__call__(x [B,H,W,3] in [0,1], train) -> float32 [B, feature_dim]`, sowing `stem` and
  `stage1`..`stage4` like `resnet.ResNet`."""
  stage_sizes: Sequence[int]
  block_cls: Callable[..., nn.Module]
  width_multiplier: float = 1.0
  dtype: Any = jnp.float32
  cifar_stem = False  # always the 7x7/2 stem: read by `resnet.TrunkShape` and shape helpers

  @nn.compact
  def __call__(self, x, train: bool):
    x = ((x.astype(jnp.float32) - jnp.asarray(MEAN)) / jnp.asarray(STD)).astype(self.dtype)
    x = _conv(self.width, 7, 2, self.dtype)(x)
    x = nn.relu(resnet._batch_norm(train, self.dtype)(x))  # pylint: disable=protected-access
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((0, 1), (0, 1)))  # pads -inf (SIE: -1e4 after ReLU)
    self.sow("intermediates", "stem", x)
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        x = self.block_cls(self.width * 2 ** i, 2 if i > 0 and j == 0 else 1, j == 0, self.dtype)(x, train)
      self.sow("intermediates", resnet.STAGE_NAMES[i], x)
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


ARCHITECTURES = {
    "resnet18_sie": ((2, 2, 2, 2), BasicBlockSIE),
    "resnet50_sie": ((3, 4, 6, 3), BottleneckSIE),
}


def get_encoder(name: str, width_multiplier: float = 1.0, dtype: Any = jnp.float32) -> ResNetSIE:
  stage_sizes, block_cls = ARCHITECTURES[name]
  return ResNetSIE(stage_sizes, block_cls, width_multiplier, dtype)
