"""Linear probe and weighted kNN on cases with known answers."""

import numpy as np
import pytest

from steerjax.metrics import probes


def _blobs(seed, n_per_class=60, num_classes=3, dim=8, spread=0.3):
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(num_classes, dim)) * 4
  y = np.repeat(np.arange(num_classes), n_per_class)
  x = centres[y] + spread * rng.normal(size=(len(y), dim))
  perm = rng.permutation(len(y))
  return x[perm].astype(np.float32), y[perm].astype(np.int32)


@pytest.mark.parametrize("optimizer,kwargs", [
    ("sgd", dict(epochs=10, batch_size=32, lr=0.2)),
    ("adam", dict(epochs=10, batch_size=32, lr=1e-2)),
    ("lbfgs", dict(epochs=30)),
])
def test_linear_probe_separable(optimizer, kwargs):
  train_x, train_y = _blobs(0)
  val_x, val_y = _blobs(0, n_per_class=20)  # same centres, fresh noise
  val_x, val_y = val_x[:50], val_y[:50]
  out = probes.linear_probe(train_x, train_y, val_x, val_y, 3, optimizer=optimizer, weight_decay=1e-4, **kwargs)
  assert out["top1"] == 1.0 and out["top5"] == 1.0
  logits = probes.probe_logits(out["head"], val_x)
  np.testing.assert_array_equal(np.argmax(logits, -1), val_y)


def test_linear_probe_standardisation_stored_in_head():
  train_x, train_y = _blobs(1)
  shifted = train_x * 100 + 7
  out = probes.linear_probe(shifted, train_y, shifted, train_y, 3, epochs=5, batch_size=32, lr=0.1)
  np.testing.assert_allclose(out["head"]["mean"], shifted.mean(0), rtol=1e-5)
  assert out["top1"] == 1.0


def test_topk_accuracy():
  logits = np.array([[0.1, 0.5, 0.4], [0.9, 0.04, 0.06]], np.float32)
  labels = np.array([2, 1])
  assert probes.topk_accuracy(logits, labels, 1) == 0.0
  assert probes.topk_accuracy(logits, labels, 2) == 0.5
  assert probes.topk_accuracy(logits, labels, 5) == 1.0  # capped at 3 classes


def test_knn_separable():
  rng = np.random.default_rng(0)
  directions = np.eye(4, 16) * 5
  y = rng.integers(0, 4, 200)
  x = directions[y] + 0.1 * rng.normal(size=(200, 16))
  out = probes.knn_accuracy(x[:150], y[:150], x[150:], y[150:], 4, k=10)
  assert out["top1"] == 1.0


def test_knn_matches_numpy():
  rng = np.random.default_rng(1)
  train_x, val_x = rng.normal(size=(80, 6)), rng.normal(size=(30, 6))
  train_y, val_y = rng.integers(0, 5, 80), rng.integers(0, 5, 30)
  k, tau = 7, 0.1
  tn = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
  vn = val_x / np.linalg.norm(val_x, axis=1, keepdims=True)
  sims = vn @ tn.T
  scores = np.zeros((30, 5))
  for i in range(30):
    nn = np.argsort(-sims[i])[:k]
    for j in nn:
      scores[i, train_y[j]] += np.exp(sims[i, j] / tau)
  expected = np.mean(np.argmax(scores, 1) == val_y)
  top5 = np.mean([val_y[i] in np.argsort(-scores[i])[:5] for i in range(30)])
  # bank_chunk 80: one chunk; 16: five; 13: seven, the last padded (its rows must never vote).
  for bank_chunk in (80, 16, 13):
    out = probes.knn_accuracy(train_x, train_y, val_x, val_y, 5, k=k, temperature=tau,
                              chunk_size=8, bank_chunk=bank_chunk)
    assert out["top1"] == pytest.approx(expected) and out["top5"] == pytest.approx(top5)
  bank = probes.l2_normalize(train_x.astype(np.float32))
  got = probes.knn_class_scores(vn.astype(np.float32), bank, train_y, 5, k=k, temperature=tau,
                                bank_chunk=13)
  np.testing.assert_allclose(got, scores, rtol=1e-4)


_TWO_DEVICES = """
import sys
import jax
import numpy as np
sys.path.insert(0, {tests_dir!r})
from test_probes import _blobs, _probe
from steerjax.metrics import probes
assert jax.local_device_count() == 2, jax.devices()
out = {{}}
for name, devices in (("two", jax.local_devices()), ("one", jax.local_devices()[:1])):
  for optimizer in ("sgd", "adam"):
    out.update({{f"{{name}}_{{optimizer}}_{{k}}": v for k, v in _probe(optimizer, devices).items()}})
np.savez({path!r}, **out)
"""


def _probe(optimizer, devices=None):
  """A probe whose batch (33) is odd (padding rows on 2 devices) and does not divide n (180)."""
  train_x, train_y = _blobs(3, spread=2.0)
  out = probes.linear_probe(train_x, train_y, train_x[:40], train_y[:40], 3, epochs=4,
                            batch_size=33, lr=0.05, optimizer=optimizer, weight_decay=1e-3,
                            devices=devices)
  return {**out["head"], "top1": np.float32(out["top1"])}


def test_probe_sharded_over_two_devices_equals_one_device(tmp_path):
  """Data-parallel minibatches over 2 emulated CPU devices train the same head as 1 device."""
  import os, subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  path = str(tmp_path / "heads.npz")
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
         "JAX_PLATFORMS": "cpu"}
  script = _TWO_DEVICES.format(tests_dir=os.path.dirname(__file__), path=path)
  subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=300)
  got = np.load(path)
  for optimizer in ("sgd", "adam"):
    here = _probe(optimizer)  # this process: one device
    assert np.abs(here["w"]).max() > 0.01  # it trained
    for key, value in here.items():
      for name in ("two", "one"):
        np.testing.assert_allclose(got[f"{name}_{optimizer}_{key}"], value, rtol=1e-4, atol=1e-5,
                                   err_msg=f"{name} {optimizer} {key}")


def test_probe_protocol_selects_the_papers_settings():
  import types  # pylint: disable=g-import-not-at-top
  from steerjax import config as config_lib, presets  # pylint: disable=g-import-not-at-top
  from steerjax.evaluators import Context  # pylint: disable=g-import-not-at-top
  cfg = config_lib.base_config()
  run = types.SimpleNamespace(config=cfg)
  assert Context.probe_settings(run) == dict(epochs=100, batch_size=256, lr=1e-2,
                                             optimizer="adam", seed=0)
  cfg.eval.probe_protocol, cfg.eval.probe_epochs = "equimod", 7  # the protocol sets every key
  assert Context.probe_settings(run) == dict(optimizer="sgd", epochs=90, lr=0.2, batch_size=256,
                                             weight_decay=0.0, seed=0)
  lars = presets.lars(config_lib.base_config(), 10, 1000, 100, 1.0)
  assert lars.eval.probe_protocol == "equimod"


def test_ridge_r2_equals_an_augmented_least_squares_fit():
  """R² of the closed form against lstsq on [X; sqrt(ridge) I] (a different solver), on a target
  that is partly linear in x and one that is pure noise."""
  rng = np.random.default_rng(0)
  x, vx = rng.normal(size=(200, 6)) * 3 + 1, rng.normal(size=(100, 6)) * 3 + 1
  w = rng.normal(size=(6, 2))
  y = np.c_[x @ w[:, 0] + 0.1 * rng.normal(size=200), rng.normal(size=200)]
  vy = np.c_[vx @ w[:, 0] + 0.1 * rng.normal(size=100), rng.normal(size=100)]
  ridge = 0.1
  mean, std = x.mean(0), x.std(0)
  xs, vxs = (x - mean) / std, (vx - mean) / std
  design = np.r_[xs / np.sqrt(len(x)), np.sqrt(ridge) * np.eye(6)]
  target = np.r_[(y - y.mean(0)) / np.sqrt(len(x)), np.zeros((6, 2))]
  coef = np.linalg.lstsq(design, target, rcond=None)[0]
  pred = vxs @ coef + y.mean(0)
  expected = 1 - ((pred - vy) ** 2).sum(0) / ((vy - y.mean(0)) ** 2).sum(0)
  got = probes.ridge_r2(x, y, vx, vy, ridge=ridge)
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  assert got[0] > 0.9 and got[1] < 0.05  # the linear target is recovered, the noise is not
