"""Official SIE / EquiMod checkpoints -> steerjax without torch (CI): random state dicts in the
official key layouts, checked against independent NumPy forward passes written from the official
code (NCHW, float64); the official MRR formula on the converted predictor; the workdir; bad
layouts. tests/test_official_heads_torch.py checks the same against real PyTorch modules."""

import os
import subprocess
import sys

import numpy as np
import pytest

from steerjax import config as config_lib
from steerjax import convert
from steerjax import main as main_lib
from steerjax import methods
from steerjax.data import rotations
from steerjax.metrics import equivariance
from steerjax.models import official_heads
from steerjax.models import sie_resnet

import test_convert
import test_official_sign

HIDDEN, DIM = 24, 6


def _linear(rng, out, cin, bias):
  w = {"weight": rng.uniform(-1, 1, (out, cin)).astype(np.float32) / np.sqrt(cin)}
  return {**w, "bias": rng.normal(0, 0.1, out).astype(np.float32)} if bias else w


def _bn(rng, c, affine=True):
  out = {"running_mean": rng.normal(0, 0.2, c).astype(np.float32),
         "running_var": rng.uniform(0.5, 2.0, c).astype(np.float32), "num_batches_tracked": np.asarray(9)}
  if affine:
    out.update(weight=rng.uniform(0.5, 1.5, c).astype(np.float32), bias=rng.normal(0, 0.1, c).astype(np.float32))
  return out


def _seq(prefix, layers):
  return {f"{prefix}.{i}.{k}": v for i, layer in layers for k, v in layer.items()}


def sie_projector(rng, prefix, dims):
  """SIE's Projector: (Linear with bias, BatchNorm1d, ReLU) x n, then Linear without bias."""
  layers, i = [], 0
  for a, b in zip(dims[:-2], dims[1:-1]):
    layers += [(i, _linear(rng, b, a, True)), (i + 1, _bn(rng, b))]
    i += 3
  return _seq(prefix, layers + [(i, _linear(rng, dims[-1], dims[-2], False))])


def sie_state_dict(seed=0, arch="resnet18_sie", g_dim=4, whole=False):
  """An SIE checkpoint (`whole`: its SimCLREquiMod, projectors on the whole representation)."""
  rng = np.random.default_rng(seed)
  backbone = test_convert.random_state_dict(arch, 8, seed)
  del backbone["fc.weight"], backbone["fc.bias"]
  full = np.shape(backbone["layer4.0.bn2.weight" if arch == "resnet18_sie" else "layer4.0.bn3.weight"])[0]
  width = full if whole else full // 2
  return {**{f"backbone.{k}": v for k, v in backbone.items()},
          **sie_projector(rng, "projector_inv", (width, HIDDEN, HIDDEN, DIM)),
          **sie_projector(rng, "projector_equi", (width, HIDDEN, HIDDEN, DIM)),
          "predictor.hypernet.net.0.weight": rng.normal(size=(DIM * DIM, g_dim)).astype(np.float32),
          "evaluator.classifier_repr.weight": np.zeros((5, full), np.float32)}


# Independent NumPy forward passes, written from the official code ------------------------------

def _conv(x, w, stride, pad):
  k = w.shape[-1]
  x = np.pad(x, ((0, 0), (0, 0), pad, pad))
  win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
  return np.einsum("bihwkl,oikl->bohw", win, w, optimize=True)


def _bn2d(x, sd, prefix):
  g = lambda k: sd[f"{prefix}.{k}"][None, :, None, None]
  return (x - g("running_mean")) / np.sqrt(g("running_var") + 1e-5) * g("weight") + g("bias")


def sie_features(sd, images, bottleneck=False):
  """SIE src/resnet.py: F.pad (2, 3) then conv1 7x7/2; pad (0, 1) then max-pool 3/2; blocks pad
  (0, 1) before a strided 3x3 (the second of a BasicBlock); a 1x1 shortcut on every block 0."""
  relu = lambda v: np.maximum(v, 0)
  p = lambda k: sd[f"backbone.{k}"]
  bn = lambda x, k: _bn2d(x, sd, f"backbone.{k}")
  x = ((images - np.asarray(sie_resnet.MEAN)) / np.asarray(sie_resnet.STD)).transpose(0, 3, 1, 2).astype(np.float64)
  x = relu(bn(_conv(x, p("conv1.weight"), 2, (2, 3)), "bn1"))
  x = np.pad(x, ((0, 0), (0, 0), (0, 1), (0, 1)), constant_values=-1e4)
  x = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(2, 3))[:, :, ::2, ::2].max((-1, -2))
  for s, n in enumerate((3, 4, 6, 3) if bottleneck else (2, 2, 2, 2)):
    for b in range(n):
      pre, stride = f"layer{s + 1}.{b}", 2 if s > 0 and b == 0 else 1
      pad3 = (1, 1) if stride == 1 else (0, 1)
      if bottleneck:
        y = relu(bn(_conv(x, p(f"{pre}.conv1.weight"), 1, (0, 0)), f"{pre}.bn1"))
        y = relu(bn(_conv(y, p(f"{pre}.conv2.weight"), stride, pad3), f"{pre}.bn2"))
        y = bn(_conv(y, p(f"{pre}.conv3.weight"), 1, (0, 0)), f"{pre}.bn3")
      else:
        y = relu(bn(_conv(x, p(f"{pre}.conv1.weight"), 1, (1, 1)), f"{pre}.bn1"))
        y = bn(_conv(y, p(f"{pre}.conv2.weight"), stride, pad3), f"{pre}.bn2")
      if b == 0:
        x = bn(_conv(x, p(f"{pre}.downsample.0.weight"), stride, (0, 0)), f"{pre}.downsample.1")
      x = relu(y + x)
  return x.mean((2, 3))


def sequential(sd, prefix, x):
  """An nn.Sequential of Linear / BatchNorm1d (eval) / ReLU in the index order of its keys."""
  x = np.asarray(x, np.float64)
  indices = sorted({int(k[len(prefix) + 1:].split(".")[0]) for k in sd if k.startswith(prefix + ".")})
  for n, i in enumerate(indices):
    g = lambda k: sd.get(f"{prefix}.{i}.{k}")
    if g("running_mean") is not None:
      x = (x - g("running_mean")) / np.sqrt(g("running_var") + 1e-5)
      x = x * g("weight") + g("bias") if g("weight") is not None else x
      if n + 1 < len(indices):
        x = np.maximum(x, 0)  # a hidden BatchNorm1d is followed by ReLU (no parameters, no key)
    else:
      x = x @ g("weight").T + (g("bias") if g("bias") is not None else 0)
  return x


def hypernet(sd, z, g):
  """ParametrizedNet, --hypernetwork linear: W = (weight @ g).view(d, d), out = W z."""
  w = np.einsum("pk,bk->bp", sd["predictor.hypernet.net.0.weight"], g).reshape(len(g), DIM, DIM)
  return np.einsum("bij,bj->bi", w, z)


def steerjax_model(keys, pairs=True):
  cfg = config_lib.base_config()
  cfg.data.pairs = pairs
  main_lib.apply_overrides(cfg, [convert._override(k, v) for k, v in keys.items()])  # pylint: disable=protected-access
  config_lib.validate(cfg)
  return methods.get_method(cfg, 10).build_model()


def close(a, b, rtol):
  a, b = np.asarray(a), np.asarray(b)
  np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max())


head = lambda name: lambda m, v: getattr(m, name)(v, train=False)


@pytest.mark.parametrize("arch,g_dim,size", [("resnet18_sie", 4, 35), ("resnet50_sie", 6, 32)])
def test_sie_checkpoint_matches_the_official_forward_pass(arch, g_dim, size):
  sd = sie_state_dict(0, arch, g_dim)
  keys, variables, _ = official_heads.convert(sd)
  assert (keys["model.name"], keys["steerer.use_colour"], keys["head.proj_output"]) == (arch, g_dim == 6, "linear")
  model = steerjax_model(keys)
  rng = np.random.default_rng(1)
  images = rng.uniform(size=(2, size, size, 3)).astype(np.float32)
  g = rng.normal(size=(2, g_dim)).astype(np.float32)
  h = sie_features(sd, images, bottleneck=arch == "resnet50_sie")
  half = h.shape[1] // 2
  close(model.apply(variables, images, method="embed"), h, 1e-4)
  h32 = h.astype(np.float32)
  z_equi = sequential(sd, "projector_equi", h32[:, half:])
  close(model.apply(variables, h32[:, :half], method=head("projector_inv")),
        sequential(sd, "projector_inv", h32[:, :half]), 1e-5)
  close(model.apply(variables, h32[:, half:], method=head("projector_equi")), z_equi, 1e-5)
  z32 = z_equi.astype(np.float32)
  close(model.apply(variables, z32, g, method="steer"), hypernet(sd, z32, g), 1e-5)


def test_sie_codes_equimod_baseline_becomes_equimod_pairs():
  sd = sie_state_dict(1, whole=True)
  keys, variables, _ = official_heads.convert(sd)
  assert keys["method"] == "equimod_pairs"
  model = steerjax_model(keys)
  images = np.random.default_rng(2).uniform(size=(2, 32, 32, 3)).astype(np.float32)
  g = np.random.default_rng(3).normal(size=(2, 4)).astype(np.float32)
  z = sequential(sd, "projector_equi", sie_features(sd, images).astype(np.float32)).astype(np.float32)
  close(model.apply(variables, images, method="steer_embed"), z, 1e-4)
  close(model.apply(variables, z, g, method="steer"), hypernet(sd, z, g), 1e-5)


def equimod_state_dict(byol, p_dim, seed=0):
  rng = np.random.default_rng(seed)
  backbone = test_convert.random_state_dict("resnet18_cifar", 8, seed)
  del backbone["fc.weight"], backbone["fc.bias"]  # EquiMod sets fc = Identity
  lin = lambda o, i, b=False: _linear(rng, o, i, b)
  sd = {f"resnet.{k}": v for k, v in backbone.items()}
  if byol:  # BYOL branch: Linear, BN, ReLU, biased Linear (projector and predictor)
    sd.update(_seq("proj_head_inv", [(0, lin(40, 64)), (1, _bn(rng, 40)), (3, lin(12, 40, True))]))
    sd.update(_seq("predictor_inv", [(0, lin(40, 12)), (1, _bn(rng, 40)), (3, lin(12, 40, True))]))
  else:  # SimCLR branch: two hidden layers, affine-free BatchNorm output
    sd.update(_seq("proj_head_inv", [(0, lin(40, 64)), (1, _bn(rng, 40)), (3, lin(40, 40)), (4, _bn(rng, 40)),
                                     (6, lin(12, 40)), (7, _bn(rng, 12, affine=False))]))
  sd.update(_seq("proj_head_eq", [(0, lin(HIDDEN, 64)), (1, _bn(rng, HIDDEN)), (3, lin(HIDDEN, HIDDEN)),
                                  (4, _bn(rng, HIDDEN)), (6, lin(DIM, HIDDEN)), (7, _bn(rng, DIM, affine=False))]))
  sd.update(_seq("proj_head_t", [(0, lin(DIM, p_dim)), (1, _bn(rng, DIM))]))
  sd.update(_seq("predictor_eq", [(0, lin(DIM, 2 * DIM)), (1, _bn(rng, DIM, affine=False))]))
  return sd


@pytest.mark.parametrize("byol", [True, False])
def test_equimod_checkpoint_matches_the_official_forward_pass(byol):
  method = "equimod_byol" if byol else "equimod_simclr"
  cfg = config_lib.base_config()
  cfg.method = method
  p_dim = methods.get_method(cfg, 10).g_dim()
  sd = equimod_state_dict(byol, p_dim)
  keys, variables, _ = official_heads.convert(sd)
  assert (keys["method"], keys["model.name"], keys["model.cifar_stem"]) == (method, "resnet18", True)
  model = steerjax_model(keys, pairs=False)
  rng = np.random.default_rng(2)
  h = rng.normal(size=(4, 64)).astype(np.float32)
  p = rng.normal(size=(4, p_dim)).astype(np.float32)
  y = sequential(sd, "proj_head_eq", h)
  y_hat = sequential(sd, "predictor_eq", np.concatenate([y, sequential(sd, "proj_head_t", p)], 1))
  close(model.apply(variables, h, method=head("equi_head")), y, 1e-5)
  close(model.apply(variables, y.astype(np.float32), p, method="steer"), y_hat, 1e-5)
  z = sequential(sd, "proj_head_inv", h)
  close(model.apply(variables, h, method=head("inv_projector")), z, 1e-5)
  if byol:
    close(model.apply(variables, z.astype(np.float32), method=head("inv_predictor")),
          sequential(sd, "predictor_inv", z), 1e-5)


def test_official_mrr_of_the_converted_predictor():
  """sie_retrieval on the converted predictor = eval_MRR_Hk.py's formula on the checkpoint's weight."""
  sd = sie_state_dict(3)
  keys, variables, _ = official_heads.convert(sd)
  model = steerjax_model(keys)
  rng = np.random.default_rng(4)
  latent = test_official_sign._latents(rng)  # pylint: disable=protected-access
  objects, views = latent.shape[:2]
  embeddings = rng.normal(size=(objects, views, DIM)).astype(np.float32)
  expected = test_official_sign._official_mrr(  # pylint: disable=protected-access
      sd["predictor.hypernet.net.0.weight"], embeddings, test_official_sign._official_quaternions(latent))  # pylint: disable=protected-access
  g = rotations.relative_transform(np.repeat(latent[:, :1], views, 1), latent, "official")[..., :4]
  got = equivariance.sie_retrieval(embeddings, g, lambda z, g_: model.apply(variables, z, g_, method="steer"))["mrr"]
  assert abs(float(got) - expected) < 1e-6, (got, expected)
  assert 0.05 < expected < 0.9  # neither degenerate nor perfect: the comparison can fail


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "steerjax.convert", *args], capture_output=True, text=True,
                        cwd=os.path.dirname(os.path.dirname(__file__)), timeout=120)


def test_layouts_steerjax_cannot_express_name_the_key(tmp_path, capsys):
  good = sie_state_dict()
  deep = {**good, "predictor.hypernet.net.2.weight": np.zeros((36, 4), np.float32)}
  with pytest.raises(official_heads.OfficialCheckpointError, match=r"unexpected key predictor\.hypernet\.net\.2\.weight"):
    official_heads.convert(deep)
  biased = {**good, "predictor.hypernet.net.0.bias": np.zeros(36, np.float32)}
  with pytest.raises(official_heads.OfficialCheckpointError, match=r"unexpected key predictor\.hypernet\.net\.0\.bias"):
    official_heads.convert(biased)
  uneven = {k: v for k, v in good.items() if not k.startswith("projector_equi.")}
  uneven.update(sie_projector(np.random.default_rng(0), "projector_equi", (16, HIDDEN, HIDDEN, DIM)))
  with pytest.raises(official_heads.OfficialCheckpointError,
                     match=r"projector_equi\.0\.weight has shape \(24, 16\), expected \(·, 32\).*halves.*\(·, 64\)"):
    official_heads.convert(uneven)
  hidden_t = equimod_state_dict(True, 5)
  hidden_t["proj_head_t.3.weight"] = np.zeros((DIM, DIM), np.float32)
  with pytest.raises(official_heads.OfficialCheckpointError, match=r"unexpected key proj_head_t\.3\.weight"):
    official_heads.convert(hidden_t)
  bad = dict(good)
  bad["backbone.layer2.0.conv1.weight"] = bad["backbone.layer2.0.conv1.weight"][:, :4]
  convert.write_safetensors(str(tmp_path / "bad.safetensors"), bad)
  r = _cli("--from-torch", str(tmp_path / "bad.safetensors"), "--config", "configs/sie_3diebench.py:smoke",
           "--out", str(tmp_path / "w"))
  assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
  assert "backbone.layer2.0.conv1.weight has shape (16, 4, 3, 3), expected (16, 8, 3, 3)" in r.stderr
  assert not (tmp_path / "w").exists()
  with pytest.raises(SystemExit) as exit_info:
    convert.main(["--from-torch", str(tmp_path / "bad.safetensors"), "--out", str(tmp_path / "w")])
  err = capsys.readouterr().err
  assert exit_info.value.code == 2 and "pass --config CONFIG" in err and len(err.strip().splitlines()) == 1


TINY = ["--config.data.num_objects=40", "--config.data.views_per_object=4", "--config.batch_size=8",
        "--config.data.quaternion_sign=official", "--config.eval.evaluators=('sie_retrieval',)"]


def test_sie_checkpoint_becomes_a_workdir_that_embeds_and_steers_as_the_official_code(tmp_path):
  from steerjax import api  # pylint: disable=g-import-not-at-top
  sd = sie_state_dict(5)
  convert.write_safetensors(str(tmp_path / "model.safetensors"), sd)
  convert.main(["--from-torch", str(tmp_path / "model.safetensors"), "--config", "configs/sie_3diebench.py:smoke",
                *TINY, "--out", str(tmp_path / "w")])
  run = api.load_run(str(tmp_path / "w"))
  assert run.config.model.name == "resnet18_sie" and run.config.data.quaternion_sign == "official"
  images = np.random.default_rng(6).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
  g = np.random.default_rng(7).normal(size=(2, 4)).astype(np.float32)
  z = sequential(sd, "projector_equi", sie_features(sd, images / 255.0)[:, 32:].astype(np.float32))
  close(run.steer_embed(images), z, 1e-4)
  z32 = z.astype(np.float32)
  close(run.steer(z32, g), hypernet(sd, z32, g), 1e-5)


def test_equimod_parameter_width_must_fit_the_configs_policy(tmp_path):
  sd = equimod_state_dict(True, 5)  # the config's policy encodes its augmentations in another width
  with pytest.raises(convert.ConvertError, match=r"proj_head_t\.0\.weight has shape \(6, 5\), expected \(6, \d+\)"):
    convert.write_workdir(sd, "configs/equimod_byol_cifar10.py:smoke", TINY[:3], str(tmp_path / "w"))
  with pytest.raises(convert.ConvertError, match=r"--config\.method=byol: the checkpoint sets config\.method"):
    convert.write_workdir(sd, "configs/equimod_byol_cifar10.py:smoke", ["--config.method=byol"], str(tmp_path / "w"))
