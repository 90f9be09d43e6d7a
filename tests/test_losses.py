"""Losses against independent float64 NumPy implementations, and device-count invariance."""

import math
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from steerjax import losses

N, D = 8, 5


def _pair(seed=0, n=N, d=D):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(n, d)).astype(np.float32), rng.normal(size=(n, d)).astype(np.float32)


def nt_xent_reference(a, b, temperature):
  """NT-Xent written out element by element."""
  z = np.concatenate([a, b]).astype(np.float64)
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  n2 = len(z)
  total = 0.0
  for i in range(n2):
    positive = (i + n2 // 2) % n2
    denominator = 0.0
    for k in range(n2):
      if k != i:
        denominator += math.exp(float(z[i] @ z[k]) / temperature)
    total += -(float(z[i] @ z[positive]) / temperature - math.log(denominator))
  return total / n2


def variance_reference(x):
  x = x.astype(np.float64)
  std = np.sqrt(x.var(axis=0, ddof=1) + 1e-4)
  return np.mean(np.maximum(0.0, 1.0 - std))


def covariance_reference(x):
  x = x.astype(np.float64)
  n, d = x.shape
  c = np.cov(x, rowvar=False)  # Unbiased: divides by n - 1.
  return sum(c[i, j] ** 2 for i in range(d) for j in range(d) if i != j) / d


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_nt_xent_matches_double_loop(temperature):
  a, b = _pair()
  np.testing.assert_allclose(losses.nt_xent(a, b, temperature),
                             nt_xent_reference(a, b, temperature), rtol=1e-5)
  grads = jax.grad(losses.nt_xent, argnums=(0, 1))(a, b, temperature)
  assert all(np.isfinite(g).all() for g in grads)


def test_nt_xent_is_low_for_aligned_views_and_symmetric():
  a, b = _pair()
  assert float(losses.nt_xent(a, 3 * a, 0.1)) < float(losses.nt_xent(a, b, 0.1))
  np.testing.assert_allclose(losses.nt_xent(a, b, 0.2), losses.nt_xent(b, a, 0.2), rtol=1e-6)


def test_byol_loss_matches_numpy_and_stops_target_gradient():
  p, z = _pair(1)
  p64, z64 = p.astype(np.float64), z.astype(np.float64)
  cos = np.sum(p64 * z64, 1) / np.linalg.norm(p64, axis=1) / np.linalg.norm(z64, axis=1)
  np.testing.assert_allclose(losses.byol_loss(p, z), np.mean(2 - 2 * cos), rtol=1e-5)
  grad_p, grad_z = jax.grad(losses.byol_loss, argnums=(0, 1))(p, z)
  assert np.abs(grad_p).sum() > 0
  np.testing.assert_array_equal(grad_z, 0.0)


def test_vicreg_terms_match_numpy():
  x, y = _pair(2, n=16, d=6)
  x = 0.3 * x  # Std below 1 in every dimension so the variance hinge is active.
  np.testing.assert_allclose(losses.vicreg_invariance(x, y),
                             np.mean((x.astype(np.float64) - y) ** 2), rtol=1e-5)
  np.testing.assert_allclose(losses.vicreg_variance(x), variance_reference(x), rtol=1e-5)
  assert variance_reference(x) > 0.5
  np.testing.assert_allclose(losses.vicreg_covariance(x), covariance_reference(x), rtol=1e-5)
  loss, terms = losses.vicreg_loss(x, y, sim_coeff=10.0, std_coeff=10.0, cov_coeff=1.0)
  expected_terms = {
      "invariance": np.mean((x.astype(np.float64) - y) ** 2),
      "variance": (variance_reference(x) + variance_reference(y)) / 2,
      "covariance": covariance_reference(x) + covariance_reference(y),
  }
  for name, value in expected_terms.items():
    np.testing.assert_allclose(terms[name], value, rtol=1e-5)
  np.testing.assert_allclose(
      loss, 10 * expected_terms["invariance"] + 10 * expected_terms["variance"]
      + expected_terms["covariance"], rtol=1e-5)


def test_steering_loss_matches_numpy_and_is_scale_free():
  pred, target = _pair(3)
  pred64, target64 = pred.astype(np.float64), target.astype(np.float64)
  expected = np.sum((pred64 - target64) ** 2) / np.sum(target64 ** 2)
  np.testing.assert_allclose(losses.steering_loss(pred, target), expected, rtol=1e-5)
  np.testing.assert_allclose(losses.steering_loss(0.01 * pred, 0.01 * target), expected, rtol=1e-5)
  np.testing.assert_allclose(losses.steering_loss(target, target), 0.0, atol=1e-7)


def test_ema_update_and_byol_tau():
  target = {"w": np.ones(3, np.float32), "b": {"c": np.zeros(2, np.float32)}}
  online = {"w": np.full(3, 3.0, np.float32), "b": {"c": np.full(2, 10.0, np.float32)}}
  updated = losses.ema_update(target, online, 0.75)
  np.testing.assert_allclose(updated["w"], 1.5)
  np.testing.assert_allclose(updated["b"]["c"], 2.5)
  np.testing.assert_allclose(losses.byol_tau(0, 100), 0.996, rtol=1e-7)
  np.testing.assert_allclose(losses.byol_tau(50, 100), 0.998, rtol=1e-7)
  np.testing.assert_allclose(losses.byol_tau(100, 100), 1.0, rtol=1e-7)
  np.testing.assert_allclose(losses.byol_tau(25, 100, base=0.99),
                             1 - 0.01 * (math.cos(math.pi / 4) + 1) / 2, rtol=1e-6)


def _quantities(x, y):
  """Losses and their gradients; the same function runs on 1 and on 4 devices."""
  fns = {
      "nt_xent": lambda x, y: losses.nt_xent(x, y, 0.2),
      "invariance": losses.vicreg_invariance,
      "variance": lambda x, y: losses.vicreg_variance(x),
      "covariance": lambda x, y: losses.vicreg_covariance(x),
      "vicreg": lambda x, y: losses.vicreg_loss(x, y)[0],
      "steering": losses.steering_loss,
  }
  out = {}
  for name, fn in fns.items():
    value, (gx, gy) = jax.value_and_grad(fn, argnums=(0, 1))(x, y)
    out.update({name: value, name + "_gx": gx, name + "_gy": gy})
  return out


_MULTI_DEVICE_SCRIPT = textwrap.dedent("""
    import sys
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    sys.path.insert(0, {tests_dir!r})
    from test_losses import _pair, _quantities
    assert jax.device_count() == 4, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    x, y = (jax.device_put(v, sharding) for v in _pair(4, n=16, d=6))
    assert len(x.sharding.device_set) == 4 and x.addressable_shards[0].data.shape == (4, 6)
    out = jax.jit(_quantities)(x, y)
    np.savez({path!r}, **{{k: np.asarray(v) for k, v in out.items()}})
""")


def test_losses_and_gradients_do_not_depend_on_device_count(tmp_path):
  path = str(tmp_path / "four_devices.npz")
  script = _MULTI_DEVICE_SCRIPT.format(tests_dir=os.path.dirname(__file__), path=path)
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
         "JAX_PLATFORMS": "cpu"}
  subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=300)
  four_devices = np.load(path)
  one_device = jax.jit(_quantities)(*_pair(4, n=16, d=6))
  assert set(four_devices.files) == set(one_device)
  for name, value in one_device.items():
    np.testing.assert_allclose(four_devices[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_coefficients_are_keyword_only_and_sie_agrees_with_vicreg_by_name():
  """SIE's coefficient order (sim, std, cov, equi) once differed from its callers' positions."""
  from steerjax.methods import sie, vicreg_equimod  # pylint: disable=g-import-not-at-top
  x, y = _pair(4, n=16, d=6)
  with pytest.raises(TypeError):
    losses.vicreg_loss(x, y, 10.0, 10.0, 1.0)
  with pytest.raises(TypeError):
    sie.sie_loss(x, y, x, y, x, 10.0, 0.45, 10.0, 1.0)
  with pytest.raises(TypeError):
    vicreg_equimod.vicreg_equimod_loss(x, y, x, y, x, 10.0, 10.0, 1.0, 0.45)
  zi, zi2, ze, ze2 = (0.5 * v for v in _pair(5, n=16, d=6) + _pair(6, n=16, d=6))
  pred = 0.3 * _pair(7, n=16, d=6)[0]
  loss_sie, _ = sie.sie_loss(zi, zi2, ze, ze2, pred, sim_coeff=3.0, std_coeff=5.0,
                             cov_coeff=0.7, equi_factor=0.3)
  # SIE's variance and covariance terms are VICReg's on [inv ; equi] (its MSE weight set to 0).
  var_cov, _ = losses.vicreg_loss(np.concatenate([zi, ze], 1), np.concatenate([zi2, ze2], 1),
                                  sim_coeff=0.0, std_coeff=5.0, cov_coeff=0.7)
  expected = (var_cov + 3.0 * losses.vicreg_invariance(zi, zi2)
              + 0.3 * 3.0 * losses.vicreg_invariance(pred, ze2)
              + 5.0 * losses.vicreg_variance(pred) / 2)
  assert losses.vicreg_variance(pred) > 0.1
  np.testing.assert_allclose(loss_sie, expected, rtol=1e-5)
