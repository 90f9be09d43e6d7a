"""ResNet-18/50 with steerjax's layout written in PyTorch, for side-by-side step timings.

Same blocks, strides, padding, BatchNorm placement and zero-init of each
residual branch's last BN scale as `steerjax.models.resnet`; only imported by
`bench train --vs-torch` (PyTorch is the optional `bench` extra).
"""

import torch
from torch import nn


class _Basic(nn.Module):
  expansion = 1

  def __init__(self, cin, features, stride):
    super().__init__()
    self.body = nn.Sequential(
        nn.Conv2d(cin, features, 3, stride, 1, bias=False), nn.BatchNorm2d(features), nn.ReLU(inplace=True),
        nn.Conv2d(features, features, 3, 1, 1, bias=False), nn.BatchNorm2d(features))
    nn.init.zeros_(self.body[-1].weight)
    self.shortcut = nn.Identity()
    if stride != 1 or cin != features:
      self.shortcut = nn.Sequential(nn.Conv2d(cin, features, 1, stride, bias=False), nn.BatchNorm2d(features))

  def forward(self, x):
    return torch.relu(self.body(x) + self.shortcut(x))


class _Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, cin, features, stride):
    super().__init__()
    out = features * 4
    self.body = nn.Sequential(
        nn.Conv2d(cin, features, 1, bias=False), nn.BatchNorm2d(features), nn.ReLU(inplace=True),
        nn.Conv2d(features, features, 3, stride, 1, bias=False), nn.BatchNorm2d(features), nn.ReLU(inplace=True),
        nn.Conv2d(features, out, 1, bias=False), nn.BatchNorm2d(out))
    nn.init.zeros_(self.body[-1].weight)
    self.shortcut = nn.Identity()
    if stride != 1 or cin != out:
      self.shortcut = nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))

  def forward(self, x):
    return torch.relu(self.body(x) + self.shortcut(x))


def classifier(name: str, width: int, cifar_stem: bool, num_classes: int) -> nn.Module:
  """Encoder (global-average-pooled) followed by a linear classifier."""
  stages, block = {"resnet18": ((2, 2, 2, 2), _Basic), "resnet50": ((3, 4, 6, 3), _Bottleneck)}[name]
  if cifar_stem:
    layers = [nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
  else:
    layers = [nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
              nn.MaxPool2d(3, 2, 1)]
  cin = width
  for i, n in enumerate(stages):
    for j in range(n):
      layers.append(block(cin, width * 2 ** i, 2 if i > 0 and j == 0 else 1))
      cin = width * 2 ** i * block.expansion
  layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
  return nn.Sequential(*layers)


def make_step(model: nn.Module, lr: float = 0.1, momentum: float = 0.9):
  """-> step(images NCHW channels_last, labels) running CE forward, backward, SGD-momentum update."""
  opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
  loss_fn = nn.CrossEntropyLoss()

  def step(images, labels):
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(images), labels)
    loss.backward()
    opt.step()
    return loss.item()

  return step
