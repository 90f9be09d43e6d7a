"""Official SIE / EquiMod checkpoints (backbone and heads) -> steerjax against real PyTorch (skipped
where torch is not installed; tests/test_official_heads.py checks the same in NumPy for CI):
outputs equal PyTorch's on the same inputs, and a `.pth` checkpoint scored by `--eval_only`.

The PyTorch modules below are written from the official key layouts (facebookresearch/SIE
src/models.py, src/resnet.py, src/hypernetwork.py; ADevillers/EquiMod src/model.py), with
random weights and BatchNorm statistics."""

import json
import os
import shlex
import subprocess
import sys

import numpy as np
import pytest

from steerjax import config as config_lib
from steerjax import convert
from steerjax import methods
from steerjax.models import official_heads
from steerjax.models import sie_resnet

import test_convert
from test_official_heads import close, steerjax_model

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional
WIDTH, HIDDEN, DIM = 8, 24, 6  # ResNet width 8 -> 512/8 = 64-d representation, halves of 32


class SIEBlock(nn.Module):
  """SIE's BasicBlock / Bottleneck: the stride on the (post-padded) 3x3, a shortcut on block 0."""

  def __init__(self, cin, planes, stride, project, bottleneck):
    super().__init__()
    self.stride, self.bottleneck = stride, bottleneck
    out = planes * (4 if bottleneck else 1)
    if bottleneck:
      self.conv1, self.bn1 = nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes)
      self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1 if stride == 1 else 0, bias=False)
      self.bn2 = nn.BatchNorm2d(planes)
      self.conv3, self.bn3 = nn.Conv2d(planes, out, 1, bias=False), nn.BatchNorm2d(out)
    else:
      self.conv1, self.bn1 = nn.Conv2d(cin, planes, 3, 1, 1, bias=False), nn.BatchNorm2d(planes)
      self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1 if stride == 1 else 0, bias=False)
      self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = (nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))
                       if project else None)

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.conv2(F.pad(y, (0, 1, 0, 1)) if self.stride == 2 else y)
    y = self.bn2(y)
    if self.bottleneck:
      y = self.bn3(self.conv3(F.relu(y)))
    return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class SIEResNet(nn.Module):
  def __init__(self, bottleneck=False, width=WIDTH):
    super().__init__()
    self.conv1, self.bn1 = nn.Conv2d(3, width, 7, 2, 0, bias=False), nn.BatchNorm2d(width)
    cin = width
    for s, n in enumerate((3, 4, 6, 3) if bottleneck else (2, 2, 2, 2)):
      blocks = []
      for b in range(n):
        blocks.append(SIEBlock(cin, width * 2 ** s, 2 if s > 0 and b == 0 else 1, b == 0, bottleneck))
        cin = width * 2 ** s * (4 if bottleneck else 1)
      setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
    self.dim = cin

  def forward(self, x):
    x = F.relu(self.bn1(self.conv1(F.pad(x, (2, 3, 2, 3)))))
    x = F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=-1e4), 3, 2)
    for s in range(1, 5):
      x = getattr(self, f"layer{s}")(x)
    return x.mean((2, 3))


def projector(dims, bias_last=False, bn_last=None, hidden_bias=True):
  """(Linear, BatchNorm1d, ReLU) x n, then Linear [, BatchNorm1d(affine=bn_last)]."""
  layers = []
  for a, b in zip(dims[:-2], dims[1:-1]):
    layers += [nn.Linear(a, b, bias=hidden_bias), nn.BatchNorm1d(b), nn.ReLU()]
  layers.append(nn.Linear(dims[-2], dims[-1], bias=bias_last))
  if bn_last is not None:
    layers.append(nn.BatchNorm1d(dims[-1], affine=bn_last))
  return nn.Sequential(*layers)


class HyperLinearNet(nn.Module):
  """ParametrizedNet with --hypernetwork linear: W(g) = (weight @ g).view(d, d), out = W z."""

  def __init__(self, dim, g_dim):
    super().__init__()
    self.dim = dim
    self.hypernet = nn.Module()
    self.hypernet.net = nn.Sequential(nn.Linear(g_dim, dim * dim, bias=False))

  def forward(self, z, g):
    w = self.hypernet.net(g).view(-1, self.dim, self.dim)
    return torch.bmm(z.unsqueeze(1), w.transpose(1, 2)).squeeze(1)


class SIENet(nn.Module):
  def __init__(self, g_dim=4, bottleneck=False):
    super().__init__()
    self.backbone = SIEResNet(bottleneck)
    half = self.backbone.dim // 2
    self.projector_inv = projector((half, HIDDEN, HIDDEN, DIM))
    self.projector_equi = projector((half, HIDDEN, HIDDEN, DIM))
    self.predictor = HyperLinearNet(DIM, g_dim)
    self.evaluator = nn.Module()
    self.evaluator.classifier_repr = nn.Linear(self.backbone.dim, 5)


class EquiModNet(nn.Module):
  """The BYOL branch's heads (one hidden layer, biased output; predictor_inv) or the SimCLR
  branch's (two hidden layers, affine-free BatchNorm output) on a given representation width."""

  def __init__(self, h_dim, p_dim, byol):
    super().__init__()
    if byol:
      self.proj_head_inv = projector((h_dim, 40, 12), bias_last=True, hidden_bias=False)
      self.predictor_inv = projector((12, 40, 12), bias_last=True, hidden_bias=False)
    else:
      self.proj_head_inv = projector((h_dim, 40, 40, 12), bn_last=False, hidden_bias=False)
    self.proj_head_eq = projector((h_dim, HIDDEN, HIDDEN, DIM), bn_last=False, hidden_bias=False)
    self.proj_head_t = nn.Sequential(nn.Linear(p_dim, DIM, bias=False), nn.BatchNorm1d(DIM))
    self.predictor_eq = nn.Sequential(nn.Linear(2 * DIM, DIM, bias=False), nn.BatchNorm1d(DIM, affine=False))


def randomise(net, seed=0):
  """Random BatchNorm statistics and affine parameters (fresh ones are the identity); eval mode."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in net.modules():
      if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
        m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
        if m.affine:
          m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
          m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
  return net.eval()


def numpy_state_dict(net, prefix=""):
  return {prefix + k: v.numpy() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("bottleneck,g_dim,size", [(False, 4, 35), (True, 6, 32)])
def test_sie_checkpoint_matches_pytorch(bottleneck, g_dim, size):
  torch.manual_seed(0)
  net = randomise(SIENet(g_dim, bottleneck))
  keys, variables, _ = official_heads.convert(numpy_state_dict(net))
  assert keys["model.name"] == ("resnet50_sie" if bottleneck else "resnet18_sie")
  assert keys["steerer.use_colour"] == (g_dim == 6) and keys["head.proj_output"] == "linear"
  model = steerjax_model(keys)
  rng = np.random.default_rng(1)
  images = rng.uniform(size=(3, size, size, 3)).astype(np.float32)
  g = rng.normal(size=(3, g_dim)).astype(np.float32)
  with torch.no_grad():
    x = torch.from_numpy(((images - sie_resnet.MEAN) / sie_resnet.STD).transpose(0, 3, 1, 2).astype(np.float32))
    h = net.backbone(x)
    half = h.shape[1] // 2
    z_inv, z_equi = net.projector_inv(h[:, :half]), net.projector_equi(h[:, half:])
    pred = net.predictor(z_equi, torch.from_numpy(g))
  close(model.apply(variables, images, method="embed"), h, 1e-4)  # a deep float32 conv stack
  # The heads on the same inputs (PyTorch's features): 1e-5.
  head = lambda name: lambda m, v: getattr(m, name)(v, train=False)
  close(model.apply(variables, h[:, :half].numpy(), method=head("projector_inv")), z_inv, 1e-5)
  close(model.apply(variables, h[:, half:].numpy(), method=head("projector_equi")), z_equi, 1e-5)
  close(model.apply(variables, z_equi.numpy(), g, method="steer"), pred, 1e-5)
  close(model.apply(variables, images, method="steer_embed"), z_equi, 1e-4)


@pytest.mark.parametrize("byol", [True, False])
def test_equimod_heads_match_pytorch(byol):
  torch.manual_seed(0)
  backbone = test_convert.random_state_dict("resnet18_cifar", WIDTH)
  del backbone["fc.weight"], backbone["fc.bias"]  # EquiMod sets fc = Identity
  method = "equimod_byol" if byol else "equimod_simclr"
  cfg = config_lib.base_config()
  cfg.method = method
  p_dim = methods.get_method(cfg, 10).g_dim()
  net = randomise(EquiModNet(64, p_dim, byol))
  keys, variables, _ = official_heads.convert({**{f"resnet.{k}": v for k, v in backbone.items()},
                                               **numpy_state_dict(net)})
  assert keys["method"] == method and (keys["model.name"], keys["model.cifar_stem"]) == ("resnet18", True)
  model = steerjax_model(keys, pairs=False)
  rng = np.random.default_rng(2)
  h = rng.normal(size=(4, 64)).astype(np.float32)
  p = rng.normal(size=(4, p_dim)).astype(np.float32)
  with torch.no_grad():
    y = net.proj_head_eq(torch.from_numpy(h))
    y_hat = net.predictor_eq(torch.cat([y, net.proj_head_t(torch.from_numpy(p))], 1))
    z = net.proj_head_inv(torch.from_numpy(h))
  head = lambda name: lambda m, v: getattr(m, name)(v, train=False)
  close(model.apply(variables, h, method=head("equi_head")), y, 1e-5)
  close(model.apply(variables, y.numpy(), p, method="steer"), y_hat, 1e-5)
  close(model.apply(variables, h, method=head("inv_projector")), z, 1e-5)
  if byol:
    with torch.no_grad():
      q = net.predictor_inv(z)
    close(model.apply(variables, z.numpy(), method=head("inv_predictor")), q, 1e-5)
  images = rng.uniform(size=(2, 16, 16, 3)).astype(np.float32)
  close(model.apply(variables, images, method="embed"),
        test_convert.reference_features(backbone, "resnet18_cifar", images), 1e-4)


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "steerjax.convert", *args], capture_output=True, text=True,
                        cwd=os.path.dirname(os.path.dirname(__file__)), timeout=120)


TINY = ["--config.data.num_objects=40", "--config.data.views_per_object=4", "--config.batch_size=8",
        "--config.data.quaternion_sign=official", "--config.eval.evaluators=('sie_retrieval',)"]


def _sie_checkpoint(tmp_path):
  torch.manual_seed(5)
  net = randomise(SIENet())
  torch.save({"epoch": 3, "model": {f"module.{k}": v for k, v in net.state_dict().items()}}, tmp_path / "model.pth")
  return net, str(tmp_path / "model.pth")


@pytest.mark.slow  # ~1 min on 2 shared cores: the sie_retrieval evaluator with its baselines
def test_eval_only_scores_a_converted_sie_checkpoint(tmp_path):
  _, path = _sie_checkpoint(tmp_path)
  r = _cli("--from-torch", path, "--config", "configs/sie_3diebench.py:smoke", *TINY, "--out", str(tmp_path / "w"))
  assert r.returncode == 0, r.stderr
  command = shlex.split(r.stdout.strip().splitlines()[-1])  # the printed evaluation command
  assert command[:3] == ["python", "-m", "steerjax.main"]
  e = subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True, timeout=600,
                     cwd=os.path.dirname(os.path.dirname(__file__)))
  assert e.returncode == 0, e.stderr
  with open(tmp_path / "w" / "report.json") as f:
    report = json.load(f)
  assert 0 < report["sie_mrr"] <= 1 and "sie_pre" in report
