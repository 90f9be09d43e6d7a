"""Steerers against explicit NumPy matrix computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from steerjax import steerers

D, K, B = 6, 3, 5


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(B, D)).astype(np.float32),
          rng.normal(size=(B, K)).astype(np.float32))


def _randomise(variables, seed=1, scale=0.3):
  """Replaces every param by random values so tests do not pass on zero init."""
  leaves, treedef = jax.tree.flatten(variables)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(
      treedef, [scale * jax.random.normal(k, l.shape) for k, l in zip(keys, leaves)])


@pytest.mark.parametrize("name", ["linear", "expm"])
def test_identity_at_init(name):
  z, g = _inputs()
  steerer = steerers.get_steerer(name, D, K)
  variables = steerer.init(jax.random.key(0), z, g)
  np.testing.assert_allclose(steerer.apply(variables, z, g), z, atol=1e-6)
  np.testing.assert_allclose(
      steerer.apply(variables, g, method="matrices"), np.broadcast_to(np.eye(D), (B, D, D)),
      atol=1e-6)


def test_linear_steerer_matches_explicit_matrices():
  z, g = _inputs()
  steerer = steerers.LinearSteerer(D, K)
  variables = _randomise(steerer.init(jax.random.key(0), z, g))
  a = np.asarray(variables["params"]["generators"], np.float64)
  rho = np.eye(D) + np.einsum("bk,kij->bij", g, a)
  expected = np.einsum("bij,bj->bi", rho, z)
  np.testing.assert_allclose(steerer.apply(variables, z, g), expected, atol=1e-5)
  np.testing.assert_allclose(steerer.apply(variables, g, method="matrices"), rho, atol=1e-5)


@pytest.mark.parametrize("cls,identity", [(steerers.LinearSteerer, True),
                                          (steerers.HyperLinear, False)])
def test_basis_then_combine_equals_matrix_products_for_many_views(cls, identity):
  """Steered TTA: one basis pass per embedding, then N cheap combinations."""
  z, _ = _inputs()
  num_views = 7
  g_views = np.random.default_rng(2).normal(size=(B, num_views, K)).astype(np.float32)
  steerer = cls(D, K)
  variables = _randomise(steerer.init(jax.random.key(0), z, g_views[:, 0]))
  basis = steerer.apply(variables, z, method="basis_apply")
  assert basis.shape == (B, K, D)
  steered = steerer.apply(variables, z[:, None], basis[:, None], g_views, method="combine")
  rho = np.asarray(steerer.apply(variables, g_views, method="matrices"), np.float64)
  assert rho.shape == (B, num_views, D, D)
  expected = np.einsum("bnij,bj->bni", rho, z)
  np.testing.assert_allclose(steered, expected, atol=1e-5)
  # The direct call agrees with the basis route, and rho is I + sum g A only when identity.
  np.testing.assert_allclose(steerer.apply(variables, z, g_views[:, 3]), expected[:, 3], atol=1e-5)
  rho_at_zero = steerer.apply(variables, np.zeros((1, K), np.float32), method="matrices")[0]
  np.testing.assert_allclose(rho_at_zero, np.eye(D) if identity else np.zeros((D, D)), atol=1e-6)


def test_hyper_linear_row_major_convention():
  z, g = _inputs()
  steerer = steerers.HyperLinear(D, K)
  variables = steerer.init(jax.random.key(0), z, g)
  kernel = np.asarray(variables["params"]["kernel"], np.float64)
  assert kernel.shape == (K, D * D)
  # PyTorch nn.Linear default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
  assert np.abs(kernel).max() <= 1 / np.sqrt(K) and np.abs(kernel).max() > 0.5 / np.sqrt(K)
  out = np.asarray(steerer.apply(variables, z, g))
  for b in range(B):
    hg = kernel.T @ g[b].astype(np.float64)  # H g with H = kernel^T ([d*d, k], torch layout)
    w = np.empty((D, D))
    for i in range(D):
      for j in range(D):
        w[i, j] = hg[i * D + j]
    np.testing.assert_allclose(out[b], w @ z[b], atol=1e-5)


def test_hyper_mlp_applies_generated_matrix_on_the_left():
  z, g = _inputs()
  steerer = steerers.get_steerer("hyper_mlp", D, K, hidden=(8, 4))
  variables = steerer.init(jax.random.key(0), z, g)
  params = variables["params"]
  h = g.astype(np.float64)
  for name in ("hidden_layers_0", "hidden_layers_1", "out_layer"):
    h = h @ np.asarray(params[name]["kernel"]) + np.asarray(params[name]["bias"])
    if name != "out_layer":
      h = np.maximum(h, 0)
  w = h.reshape(B, D, D)
  np.testing.assert_allclose(steerer.apply(variables, z, g), np.einsum("bij,bj->bi", w, z),
                             atol=1e-5)


def test_expm_composes_like_a_group_with_one_generator():
  steerer = steerers.ExpmSteerer(D, 1)
  z = np.ones((1, D), np.float32)
  variables = _randomise(steerer.init(jax.random.key(0), z, np.zeros((1, 1), np.float32)))
  g1, g2 = np.float32([[0.7]]), np.float32([[-0.3]])
  rho = lambda g: np.asarray(steerer.apply(variables, g, method="matrices"), np.float64)[0]
  np.testing.assert_allclose(rho(g1) @ rho(g2), rho(g1 + g2), atol=1e-5)
  np.testing.assert_allclose(rho(np.zeros((1, 1), np.float32)), np.eye(D), atol=1e-6)
  a = np.asarray(variables["params"]["generators"][0], np.float64)
  np.testing.assert_allclose(rho(g1), scipy.linalg.expm(0.7 * a), atol=1e-5)
  np.testing.assert_allclose(rho(g1) @ rho(-g1), np.eye(D), atol=1e-5)


def test_equimod_predictor_matches_numpy():
  rng = np.random.default_rng(3)
  y0 = rng.normal(size=(8, 4)).astype(np.float32)
  p = rng.normal(size=(8, 5)).astype(np.float32)
  steerer = steerers.get_steerer("equimod", 4, 5)
  variables = _randomise(steerer.init(jax.random.key(0), y0, p))
  params = variables["params"]
  assert set(params) == {"Dense_0", "Dense_1", "BatchNorm_0"}  # Last BN has no affine params.

  def batch_norm(x, scale=1.0, bias=0.0):
    return (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5) * scale + bias

  bn0 = params["BatchNorm_0"]
  emb = batch_norm(p @ np.asarray(params["Dense_0"]["kernel"], np.float64),
                   np.asarray(bn0["scale"]), np.asarray(bn0["bias"]))
  expected = batch_norm(np.concatenate([y0, emb], 1) @ np.asarray(params["Dense_1"]["kernel"]))
  out, _ = steerer.apply(variables, y0, p, train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(out, expected, atol=1e-4)


def test_g_width_is_checked_and_unknown_name_rejected():
  z, g = _inputs()
  with pytest.raises(ValueError, match="expects 4"):
    steerers.LinearSteerer(D, 4).init(jax.random.key(0), z, g)
  with pytest.raises(ValueError, match="hyper_linear"):
    steerers.get_steerer("rotation", D, K)


@pytest.mark.parametrize("name", sorted(steerers.STEERERS))
def test_uniform_interface_and_gradients(name):
  z, g = _inputs()
  steerer = steerers.get_steerer(name, D, K)
  variables = steerer.init(jax.random.key(0), z, g)

  def loss(params):
    out, _ = steerer.apply({**variables, "params": params}, z, g, train=True, mutable=True)
    return jnp.sum(jnp.square(out - 1.0))

  grads = jax.grad(loss)(variables["params"])
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(grads))
  assert any(np.abs(x).sum() > 0 for x in jax.tree.leaves(grads))
