"""torchvision state dicts -> steerjax encoders: parity with an NCHW reference, round trips, bad input."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from steerjax import convert
from steerjax.models import encoders
from steerjax.models import resnet
from steerjax.models import torch_weights as tw

MEAN, STD = np.array(resnet.IMAGENET_MEAN), np.array(resnet.IMAGENET_STD)


def random_state_dict(arch: str, width: int, seed: int = 0) -> dict:
  """A torchvision-layout state dict with random weights and BN statistics."""
  rng = np.random.default_rng(seed)
  name, cifar_stem = tw.ARCHS[arch]
  module = encoders.get_encoder(name, width / 64, cifar_stem)
  shapes = tw._expected_shapes(module)  # pylint: disable=protected-access
  sd = {}
  for prefix, path, kind in tw._layer_names(name):  # pylint: disable=protected-access
    if kind == "conv":
      kh, kw, i, o = tw._get(shapes["params"], path)["kernel"].shape  # pylint: disable=protected-access
      sd[f"{prefix}.weight"] = rng.normal(0, np.sqrt(2 / (i * kh * kw)), (o, i, kh, kw)).astype(np.float32)
    else:
      (c,) = tw._get(shapes["params"], path)["scale"].shape  # pylint: disable=protected-access
      sd[f"{prefix}.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
      sd[f"{prefix}.bias"] = rng.normal(0, 0.1, c).astype(np.float32)
      sd[f"{prefix}.running_mean"] = rng.normal(0, 0.2, c).astype(np.float32)
      sd[f"{prefix}.running_var"] = rng.uniform(0.5, 2.0, c).astype(np.float32)
      sd[f"{prefix}.num_batches_tracked"] = np.asarray(7, np.int64)
  sd["fc.weight"] = rng.normal(size=(10, module.feature_dim)).astype(np.float32)
  sd["fc.bias"] = np.zeros(10, np.float32)
  return sd


# An independent NCHW forward pass, written as torchvision computes it.
def _conv(x, w, stride):
  k = w.shape[-1]
  p = k // 2
  x = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
  win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
  return np.einsum("bihwkl,oikl->bohw", win, w, optimize=True)


def _bn(x, sd, prefix):
  g = lambda k: sd[f"{prefix}.{k}"][None, :, None, None]
  return (x - g("running_mean")) / np.sqrt(g("running_var") + 1e-5) * g("weight") + g("bias")


def _maxpool(x):
  x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
  return np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(2, 3))[:, :, ::2, ::2].max((-1, -2))


def reference_features(sd, arch, images):
  name, cifar_stem = tw.ARCHS[arch]
  relu = lambda v: np.maximum(v, 0)
  x = ((images - MEAN) / STD).transpose(0, 3, 1, 2).astype(np.float64)
  x = relu(_bn(_conv(x, sd["conv1.weight"], 1 if cifar_stem else 2), sd, "bn1"))
  if not cifar_stem:
    x = _maxpool(x)
  stage_sizes, block = resnet.ARCHITECTURES[name]
  convs = 2 if block is resnet.BasicBlock else 3
  for s, n in enumerate(stage_sizes):
    for b in range(n):
      pre, stride = f"layer{s + 1}.{b}", 2 if s > 0 and b == 0 else 1
      y = x
      for k in range(1, convs + 1):
        conv_stride = stride if (k == 1 and convs == 2) or (k == 2 and convs == 3) else 1
        y = _bn(_conv(y, sd[f"{pre}.conv{k}.weight"], conv_stride), sd, f"{pre}.bn{k}")
        if k < convs:
          y = relu(y)
      if f"{pre}.downsample.0.weight" in sd:
        x = _bn(_conv(x, sd[f"{pre}.downsample.0.weight"], stride), sd, f"{pre}.downsample.1")
      x = relu(y + x)
  return x.mean((2, 3))


@pytest.mark.parametrize("arch,width,size", [("resnet18", 8, 35), ("resnet18_cifar", 8, 16), ("resnet50", 8, 33)])
def test_features_match_nchw_reference(arch, width, size):
  sd = random_state_dict(arch, width)
  images = np.random.default_rng(1).uniform(size=(2, size, size, 3)).astype(np.float32)
  module = tw.encoder_for(sd, arch)
  out = module.apply(tw.from_torch_state_dict(sd, arch), images, train=False)
  want = reference_features(sd, arch, images)
  np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_round_trip_is_exact(tmp_path):
  sd = random_state_dict("resnet50_cifar", 8)
  variables = tw.from_torch_state_dict(sd, "resnet50_cifar")
  back = tw.to_torch_state_dict(variables, "resnet50_cifar")
  for key, value in back.items():
    if not key.endswith("num_batches_tracked"):
      np.testing.assert_array_equal(value, sd[key], err_msg=key)
  assert set(back) == {k for k in sd if not k.startswith("fc.")}
  path = str(tmp_path / "w.safetensors")
  convert.write_safetensors(path, back)
  again = tw.from_torch_state_dict(convert.read_safetensors(path), "resnet50_cifar")
  jax.tree.map(np.testing.assert_array_equal, again, variables)


def test_nested_npz_and_cli_load(tmp_path):
  sd = random_state_dict("resnet18_cifar", 8)
  np.savez(tmp_path / "w.npz", **{f"module.{k}": v for k, v in sd.items()})
  convert.main(["--from-torch", str(tmp_path / "w.npz"), "--arch", "resnet18_cifar", "--out", str(tmp_path / "out")])
  module, variables = convert.load_converted(str(tmp_path / "out"))
  images = np.random.default_rng(2).uniform(size=(1, 8, 8, 3)).astype(np.float32)
  np.testing.assert_allclose(module.apply(variables, images, train=False),
                             reference_features(sd, "resnet18_cifar", images), rtol=1e-4, atol=1e-5)


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "steerjax.convert", *args], capture_output=True, text=True,
                        cwd=os.path.dirname(os.path.dirname(__file__)), timeout=120)


def test_garbled_safetensors_is_one_error_line(tmp_path):
  path = tmp_path / "garbled.safetensors"
  path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
  r = _cli("--from-torch", str(path), "--arch", "resnet18", "--out", str(tmp_path / "o"))
  assert r.returncode == 2 and "Traceback" not in r.stderr
  assert str(path) in r.stderr and len(r.stderr.strip().splitlines()) == 1
  assert not (tmp_path / "o").exists()


def test_bad_input_names_key_and_shapes(tmp_path):
  sd = random_state_dict("resnet18", 8)
  sd["layer2.0.conv1.weight"] = sd["layer2.0.conv1.weight"][:, :4]
  convert.write_safetensors(str(tmp_path / "bad.safetensors"), sd)
  r = _cli("--from-torch", str(tmp_path / "bad.safetensors"), "--arch", "resnet18", "--out", str(tmp_path / "o"))
  assert r.returncode == 2 and "Traceback" not in r.stderr
  assert "layer2.0.conv1.weight has shape (16, 4, 3, 3), expected (16, 8, 3, 3)" in r.stderr
  with pytest.raises(tw.StateDictError, match="missing key layer4.1.bn2.running_var"):
    good = random_state_dict("resnet18", 8)
    tw.from_torch_state_dict({k: v for k, v in good.items() if k != "layer4.1.bn2.running_var"}, "resnet18")
  with pytest.raises(tw.StateDictError, match="unexpected key layer4.2.conv1.weight"):
    tw.from_torch_state_dict({**random_state_dict("resnet18", 8), "layer4.2.conv1.weight": np.zeros(1)},
                             "resnet18")
  r = _cli("--from-torch", str(tmp_path / "bad.safetensors"), "--arch", "vgg16", "--out", str(tmp_path / "o"))
  assert r.returncode == 2 and "known: resnet18, resnet50, resnet18_cifar, resnet50_cifar" in r.stderr


@pytest.mark.slow
def test_parity_with_torchvision():
  """Real PyTorch: a torchvision ResNet-18/50 in eval mode gives the converted encoder's features."""
  torch = pytest.importorskip("torch")
  torchvision = pytest.importorskip("torchvision")
  for arch in ("resnet18", "resnet50"):
    net = getattr(torchvision.models, arch)().eval()
    with torch.no_grad():
      for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
          m.running_mean.uniform_(-0.2, 0.2)
          m.running_var.uniform_(0.5, 2.0)
      net.fc = torch.nn.Identity()
      images = np.random.default_rng(0).uniform(size=(2, 64, 64, 3)).astype(np.float32)
      x = torch.from_numpy(((images - MEAN) / STD).astype(np.float32).transpose(0, 3, 1, 2))
      want = net(x).numpy()
    sd = {k: v.numpy() for k, v in net.state_dict().items()}
    out = tw.encoder_for(sd, arch).apply(tw.from_torch_state_dict(sd, arch), images, train=False)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.slow  # ~65 s on 2 cores: trains 2 steps first
def test_to_torch_from_workdir_round_trips(tmp_path):
  tiny = ["--config.data.num_objects=40", "--config.data.views_per_object=4", "--config.model.width_multiplier=0.125",
          "--config.batch_size=16", "--config.head.proj_hidden=32", "--config.head.proj_dim=16",
          "--config.eval.evaluators=()", "--config.progress=false", "--config.total_steps=2"]
  subprocess.run([sys.executable, "-m", "steerjax.main", "--config", "configs/default.py", "--workdir",
                  str(tmp_path / "run"), *tiny], check=True, capture_output=True, timeout=300,
                 cwd=os.path.dirname(os.path.dirname(__file__)))
  r = _cli("--to-torch", str(tmp_path / "run"), "--out", str(tmp_path / "enc.safetensors"))
  assert r.returncode == 0, r.stderr
  arch, variables = convert.workdir_encoder(str(tmp_path / "run"))
  assert arch == "resnet18_cifar"
  back = tw.from_torch_state_dict(convert.read_safetensors(str(tmp_path / "enc.safetensors")), arch)
  jax.tree.map(np.testing.assert_array_equal, back, jax.device_get(variables))
