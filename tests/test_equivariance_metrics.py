"""Equivariance metrics: exact toy cases and independent NumPy computations."""

import jax.numpy as jnp
import numpy as np
import pytest

from steerjax import steerers
from steerjax.metrics import equivariance as eq


def _exact_toy(seed=0, n=6, k=3, num_objects=5, num_views=7):
  """Linear encoder f(x) = M x and augmentations T(g) = I + sum_k g_k B_k in input space.

  Then f(T(g) x) = rho(g) f(x) exactly with rho(g) = I + sum_k g_k M B_k M^-1.
  """
  rng = np.random.default_rng(seed)
  m = rng.normal(size=(n, n)) + 3 * np.eye(n)
  b = rng.normal(size=(k, n, n)) * 0.3
  generators = np.einsum("ij,kjl,lm->kim", m, b, np.linalg.inv(m)).astype(np.float32)
  x0 = rng.normal(size=(num_objects, n))
  g = rng.normal(size=(num_objects, num_views, k))
  g[:, 0] = 0  # view 0 is the source: identity transformation
  views = np.einsum("ij,ovjl,ol->ovi", np.eye(n), np.eye(n) + np.einsum("ovk,kjl->ovjl", g, b), x0)
  embs = np.einsum("ij,ovj->ovi", m, views).astype(np.float32)
  steerer = steerers.LinearSteerer(dim=n, g_dim=k)
  variables = {"params": {"generators": jnp.asarray(generators)}}
  predict = lambda z, gg: steerer.apply(variables, z, gg)
  return embs, g.astype(np.float32), predict


def test_exactly_steerable_encoder_has_zero_error_and_mrr_one():
  embs, g, predict = _exact_toy()
  z_src = embs[:, :1].repeat(embs.shape[1], 1).reshape(-1, embs.shape[-1])
  z_tgt = embs.reshape(-1, embs.shape[-1])
  z_pred = predict(z_src, g.reshape(-1, g.shape[-1]))
  assert eq.steering_error(z_src, z_tgt, z_pred) < 1e-9
  assert eq.steering_cosine(z_tgt, z_pred) == pytest.approx(1.0, abs=1e-6)
  assert eq.steering_error(z_src, z_tgt, z_src) == pytest.approx(1.0)
  out = eq.sie_retrieval(jnp.asarray(embs), jnp.asarray(g), predict)
  assert out["mrr"] == pytest.approx(1.0) and out["h@1"] == 1.0 and out["h@10"] == 1.0


def test_steering_error_and_cosine_match_numpy():
  rng = np.random.default_rng(0)
  a, b, c = (rng.normal(size=(20, 5)) for _ in range(3))
  expected = np.mean(np.sum((b - c) ** 2, 1)) / np.mean(np.sum((b - a) ** 2, 1))
  assert eq.steering_error(a, b, c) == pytest.approx(expected, rel=1e-5)
  cos = np.mean(np.sum(b * c, 1) / np.linalg.norm(b, axis=1) / np.linalg.norm(c, axis=1))
  assert eq.steering_cosine(b, c) == pytest.approx(cos, rel=1e-5)


def test_gamma_zero_for_isometry_and_matches_numpy():
  rng = np.random.default_rng(0)
  f_x, f_xp = rng.normal(size=(2, 16, 4))
  q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
  # a acts as an orthogonal map plus a translation: distances preserved, embeddings move.
  a = lambda f: f @ q.T + 0.5
  assert eq.gamma(f_x, f_xp, a(f_x), a(f_xp)) < 1e-10
  f_ax, f_axp = rng.normal(size=(2, 16, 4))
  d = lambda u, v: np.sum((u - v) ** 2, 1)
  expected = np.mean((d(f_axp, f_ax) - d(f_xp, f_x)) ** 2 / (d(f_axp, f_xp) + d(f_ax, f_x)) ** 2)
  assert eq.gamma(f_x, f_xp, f_ax, f_axp) == pytest.approx(expected, rel=1e-4)


def test_mrr_hits_matches_brute_force():
  rng = np.random.default_rng(0)
  pred = rng.normal(size=(40, 8))
  cands = rng.normal(size=(40, 9, 8))
  target = rng.integers(0, 9, 40)
  out = eq.mrr_hits(pred, cands, target, ks=(1, 3))
  pn = pred / np.linalg.norm(pred, axis=-1, keepdims=True)
  cn = cands / np.linalg.norm(cands, axis=-1, keepdims=True)
  ranks = []
  for i in range(40):
    order = np.argsort(-(cn[i] @ pn[i]))
    ranks.append(1 + int(np.where(order == target[i])[0][0]))
  ranks = np.array(ranks)
  assert out["mrr"] == pytest.approx(np.mean(1 / ranks), rel=1e-5)
  assert out["h@1"] == pytest.approx(np.mean(ranks <= 1))
  assert out["h@3"] == pytest.approx(np.mean(ranks <= 3))


def _random_quats(rng, n):
  q = rng.normal(size=(n, 4))
  return q / np.linalg.norm(q, axis=1, keepdims=True)


def test_pre_zero_when_neighbour_pose_matches_and_sign_invariant():
  rng = np.random.default_rng(0)
  all_embs = rng.normal(size=(50, 8))
  all_q = _random_quats(rng, 50)
  idx = rng.integers(0, 50, 20)
  pred = 3.0 * all_embs[idx]  # the prediction hits an embedding exactly (up to scale)
  signs = rng.choice([-1.0, 1.0], size=(20, 1))
  assert eq.pre(pred, signs * all_q[idx], all_embs, all_q) == pytest.approx(0.0, abs=1e-6)
  other_q = _random_quats(rng, 20)
  expected = np.mean(1 - np.sum(other_q * all_q[idx], 1) ** 2)
  assert eq.pre(pred, other_q, all_embs, all_q, chunk_size=7) == pytest.approx(expected, rel=1e-5)


def test_r2_uses_one_global_mean():
  rng = np.random.default_rng(0)
  y = rng.normal(size=(30, 4)) + np.array([0.0, 5.0, -3.0, 10.0])
  assert eq.r2_score(y, y) == pytest.approx(1.0)
  assert eq.r2_score(y, np.full_like(y, y.mean())) == pytest.approx(0.0, abs=1e-6)
  column_means = np.broadcast_to(y.mean(0), y.shape)
  expected = 1 - np.sum((y - column_means) ** 2) / np.sum((y - y.mean()) ** 2)
  assert eq.r2_score(y, column_means) == pytest.approx(expected, rel=1e-5)
  assert expected > 0.5  # a per-column R^2 (sklearn's average) would give 0 here


def test_regress_r2_learns_a_linear_map():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(2, 300, 5))
  w = rng.normal(size=(10, 3))
  y = np.concatenate([a, b], 1) @ w
  r2 = eq.regress_r2(a[:240], b[:240], y[:240], a[240:], b[240:], y[240:], hidden=(64,), steps=600,
                     batch_size=64, lr=3e-3)
  assert r2 > 0.95
