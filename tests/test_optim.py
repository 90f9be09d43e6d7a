"""Optimizers: LARS masking against a direct computation, schedules at chosen steps."""

import math

import jax
import ml_collections
import numpy as np
import optax
import pytest

from steerjax.optim import make_optimizer


def _config(**overrides):
  cfg = ml_collections.ConfigDict(dict(
      name="lars", learning_rate=0.5, weight_decay=1e-2, momentum=0.9, nesterov=False,
      warmup_epochs=0.0, schedule="constant"))
  cfg.update(overrides)
  return cfg


def _params_and_grads():
  rng = np.random.default_rng(0)
  params = {"conv": {"kernel": rng.normal(size=(3, 3, 2, 4))},
            "dense": {"kernel": rng.normal(size=(4, 3)), "bias": rng.normal(size=(3,))},
            "bn": {"scale": rng.normal(size=(4,)), "bias": rng.normal(size=(4,))}}
  grads = jax.tree.map(lambda p: rng.normal(size=p.shape), params)
  to32 = lambda tree: jax.tree.map(lambda v: np.float32(v), tree)
  return to32(params), to32(grads)


def test_lars_two_steps_match_direct_computation():
  cfg = _config()
  tx, schedule = make_optimizer(cfg, total_steps=100, steps_per_epoch=10)
  params, grads = _params_and_grads()
  state = tx.init(params)
  lr, wd, eta, mu = 0.5, 1e-2, 1e-3, 0.9
  expected = jax.tree.map(lambda p: p.astype(np.float64), params)
  momentum = jax.tree.map(np.zeros_like, expected)
  for _ in range(2):
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    for path, p in jax.tree_util.tree_leaves_with_path(expected):
      g = np.float64(_get(grads, path))
      if p.ndim > 1:  # Kernels: weight decay, then layer-wise trust ratio.
        d = g + wd * p
        d = eta * np.linalg.norm(p) / np.linalg.norm(d) * d
      else:  # BN params and biases: plain momentum SGD, no decay, no adaptation.
        d = g
      m = mu * _get(momentum, path) + lr * d
      _set(momentum, path, m)
      _set(expected, path, p - m)
  for path, p in jax.tree_util.tree_leaves_with_path(params):
    np.testing.assert_allclose(p, _get(expected, path), rtol=1e-5, atol=1e-6, err_msg=str(path))
  assert float(schedule(0)) == 0.5


def test_lars_does_not_decay_bn_and_biases():
  """With zero gradients only weight decay acts: kernels shrink, 1-D params stay put."""
  tx, _ = make_optimizer(_config(), total_steps=100, steps_per_epoch=10)
  params, _ = _params_and_grads()
  zeros = jax.tree.map(np.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  for leaf_path, update in jax.tree_util.tree_leaves_with_path(updates):
    p = _get(params, leaf_path)
    if p.ndim > 1:
      # d = wd * p, trust ratio eta |p| / |wd p| = eta / wd, so the step is -lr * eta * p.
      np.testing.assert_allclose(update, -0.5 * 1e-3 * p, rtol=1e-5)
    else:
      np.testing.assert_array_equal(update, 0.0)


def test_warmup_cosine_schedule_values():
  cfg = _config(learning_rate=0.6, warmup_epochs=2, schedule="cosine")
  _, schedule = make_optimizer(cfg, total_steps=100, steps_per_epoch=10)
  peak = 0.6
  np.testing.assert_allclose(schedule(0), 0.0, atol=1e-7)
  np.testing.assert_allclose(schedule(5), peak * 5 / 20, rtol=1e-6)
  np.testing.assert_allclose(schedule(20), peak, rtol=1e-6)
  for step in (30, 60, 90):
    expected = peak * 0.5 * (1 + math.cos(math.pi * (step - 20) / 80))
    np.testing.assert_allclose(schedule(step), expected, rtol=1e-5)
  np.testing.assert_allclose(schedule(100), 0.0, atol=1e-7)


@pytest.mark.parametrize("warmup", [dict(warmup_epochs=1), dict(warmup_steps=10),
                                    dict(warmup_epochs=0.5, warmup_steps=5)])
def test_constant_schedule_after_warmup(warmup):
  _, schedule = make_optimizer(_config(**warmup), total_steps=100, steps_per_epoch=10)
  np.testing.assert_allclose([schedule(s) for s in (0, 5, 10, 99)], [0.0, 0.25, 0.5, 0.5],
                             rtol=1e-6)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_other_optimizers_step(name):
  tx, _ = make_optimizer(_config(name=name, nesterov=True), total_steps=10, steps_per_epoch=5)
  params, grads = _params_and_grads()
  updates, _ = tx.update(grads, tx.init(params), params)
  if name == "sgd":  # First Nesterov step: -lr * (1 + mu) * (g + wd p).
    expected = jax.tree.map(lambda g, p: -0.5 * 1.9 * (g + 1e-2 * p), grads, params)
    jax.tree.map(lambda u, e: np.testing.assert_allclose(u, e, rtol=1e-5), updates, expected)
  assert all(np.abs(u).sum() > 0 for u in jax.tree.leaves(updates))


def test_unknown_names_rejected():
  with pytest.raises(ValueError, match="lars"):
    make_optimizer(_config(name="rmsprop"), 10, 5)
  with pytest.raises(ValueError, match="cosine"):
    make_optimizer(_config(schedule="step"), 10, 5)


def _get(tree, path):
  for key in path:
    tree = tree[key.key]
  return tree


def _set(tree, path, value):
  for key in path[:-1]:
    tree = tree[key.key]
  tree[path[-1].key] = value
