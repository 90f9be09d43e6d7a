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
  out = probes.knn_accuracy(train_x, train_y, val_x, val_y, 5, k=k, temperature=tau, chunk_size=8)
  assert out["top1"] == pytest.approx(expected)
  top5 = np.mean([val_y[i] in np.argsort(-scores[i])[:5] for i in range(30)])
  assert out["top5"] == pytest.approx(top5)
