"""Rotation conventions, checked against independent constructions and the official SIE formula."""

import numpy as np
from scipy.spatial.transform import Rotation
import pytest

from steerjax.data import rotations


def rodrigues(axis, angle):
  """Rotation matrix about a unit axis by `angle` (right hand), via Rodrigues' formula."""
  axis = np.asarray(axis, np.float64) / np.linalg.norm(axis)
  k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
  return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def hamilton(p, q):
  """Quaternion product p * q, scalar-last."""
  pv, pw, qv, qw = p[:3], p[3], q[:3], q[3]
  return np.concatenate([pw * qv + qw * pv + np.cross(pv, qv), [pw * qw - pv @ qv]])


def axis_quaternion(axis, angle):
  return np.concatenate([np.sin(angle / 2) * np.asarray(axis, np.float64), [np.cos(angle / 2)]])


def random_latents(rng, n):
  return np.stack([
      *(rng.uniform(-np.pi / 2, np.pi / 2, n) for _ in range(3)), rng.uniform(0, 1, n),
      rng.uniform(0, np.pi / 4, n), rng.uniform(0, 2 * np.pi, n), rng.uniform(0, 1, n)
  ], -1).astype(np.float32)


def test_euler_is_extrinsic_xyz():
  rng = np.random.default_rng(0)
  ex, ey, ez = np.eye(3)
  for x, y, z in rng.uniform(-np.pi, np.pi, (20, 3)):
    expected = rodrigues(ez, z) @ rodrigues(ey, y) @ rodrigues(ex, x)
    np.testing.assert_allclose(rotations.euler_to_matrix([x, y, z]), expected, atol=1e-12)


def test_euler_matches_composed_quaternions():
  rng = np.random.default_rng(1)
  ex, ey, ez = np.eye(3)
  angles = rng.uniform(-np.pi / 2, np.pi / 2, (50, 3))
  got = rotations.matrix_to_quaternion(rotations.euler_to_matrix(angles))
  for a, q in zip(angles, got):
    expected = hamilton(axis_quaternion(ez, a[2]), hamilton(axis_quaternion(ey, a[1]), axis_quaternion(ex, a[0])))
    expected = expected if expected[3] >= 0 else -expected
    np.testing.assert_allclose(q, expected, atol=1e-12)


def test_quaternion_to_matrix_is_rodrigues():
  rng = np.random.default_rng(2)
  for _ in range(20):
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = rng.uniform(-np.pi, np.pi)
    np.testing.assert_allclose(rotations.quaternion_to_matrix(axis_quaternion(axis, angle)),
                               rodrigues(axis, angle), atol=1e-12)


@pytest.mark.parametrize("angle", [0.0, 1e-4, 1.0, np.pi - 1e-6, np.pi])
def test_matrix_to_quaternion_round_trip(angle):
  rng = np.random.default_rng(3)
  axes = rng.normal(size=(30, 3))
  axes /= np.linalg.norm(axes, axis=-1, keepdims=True)
  mats = np.stack([rodrigues(a, angle) for a in axes])
  q = rotations.matrix_to_quaternion(mats)
  np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1, atol=1e-12)
  assert np.all(q[:, 3] >= 0)
  np.testing.assert_allclose(rotations.quaternion_to_matrix(q), mats, atol=1e-9)


def test_relative_quaternion_is_in_the_object_frame():
  rng = np.random.default_rng(4)
  la, lb = random_latents(rng, 1000), random_latents(rng, 1000)
  q = rotations.relative_quaternion(la, lb)
  assert q.dtype == np.float32 and q.shape == (1000, 4)
  assert np.all(q[:, 3] >= 0)
  np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1, atol=1e-6)
  for a, b, qi in zip(la.astype(np.float64), lb.astype(np.float64), q.astype(np.float64)):
    ex, ey, ez = np.eye(3)
    r_a = rodrigues(ez, a[2]) @ rodrigues(ey, a[1]) @ rodrigues(ex, a[0])
    r_b = rodrigues(ez, b[2]) @ rodrigues(ey, b[1]) @ rodrigues(ex, b[0])
    x, y, z, w = qi
    # The matrix of q written out independently of quaternion_to_matrix.
    r_q = rodrigues([x, y, z], 2 * np.arctan2(np.linalg.norm([x, y, z]), w)) if np.linalg.norm([x, y, z]) > 0 else np.eye(3)
    np.testing.assert_allclose(r_a @ r_q, r_b, atol=1e-5)


def test_relative_transform_layout():
  rng = np.random.default_rng(5)
  la, lb = random_latents(rng, 7), random_latents(rng, 7)
  t = rotations.relative_transform(la, lb)
  assert t.shape == (7, 6) and t.dtype == np.float32
  np.testing.assert_array_equal(t[:, :4], rotations.relative_quaternion(la, lb))
  np.testing.assert_allclose(t[:, 4], lb[:, 3] - la[:, 3])
  np.testing.assert_allclose(t[:, 5], lb[:, 6] - la[:, 6])
  np.testing.assert_allclose(rotations.relative_transform(la, la)[:, :4], np.tile([0, 0, 0, 1], (7, 1)), atol=1e-6)


def test_relative_quaternion_matches_the_official_scipy_formula():
  """SIE's dataset code: rot_1.inv() * rot_2 with from_euler("xyz"), then as_quat()."""
  rng = np.random.default_rng(5)
  la, lb = random_latents(rng, 200), random_latents(rng, 200)
  official = (Rotation.from_euler("xyz", la[:, :3]).inv()
              * Rotation.from_euler("xyz", lb[:, :3])).as_quat()
  official *= np.where(official[:, 3:] < 0, -1.0, 1.0)  # steerjax's canonical sign, w >= 0
  np.testing.assert_allclose(rotations.relative_quaternion(la, lb), official, atol=1e-5)


def test_module_docstring_states_the_convention_the_code_uses():
  """The docstring once said R_b = R(q) R_a; the code (as SIE) gives R_b = R_a R(q)."""
  assert "R_b = R_a @ R(q)" in rotations.__doc__ and "R(q) @ R_a" not in rotations.__doc__
  rng = np.random.default_rng(6)
  la, lb = random_latents(rng, 50), random_latents(rng, 50)
  r_a, r_b = rotations.euler_to_matrix(la), rotations.euler_to_matrix(lb)
  r_q = rotations.quaternion_to_matrix(rotations.relative_quaternion(la, lb))
  np.testing.assert_allclose(r_a @ r_q, r_b, atol=1e-5)
  assert np.abs(r_q @ r_a - r_b).max() > 0.1  # the other order is a different rotation


def test_official_sign_is_scipys_quaternion_sign_included():
  """SIE's dataset feeds `(from_euler(a).inv() * from_euler(b)).as_quat()` unflipped."""
  rng = np.random.default_rng(7)
  la, lb = random_latents(rng, 2000), random_latents(rng, 2000)
  official = (Rotation.from_euler("xyz", la[:, :3]).inv() * Rotation.from_euler("xyz", lb[:, :3])).as_quat()
  q = rotations.relative_quaternion(la, lb, "official")
  np.testing.assert_allclose(q, official, atol=1e-6)
  flipped = official[:, 3] < 0
  assert 0.01 < flipped.mean() < 0.2  # some pairs have w < 0: there the two signs differ
  canonical = rotations.relative_quaternion(la, lb)
  np.testing.assert_allclose(canonical[flipped], -q[flipped], atol=1e-6)
  np.testing.assert_allclose(canonical[~flipped], q[~flipped], atol=1e-6)
  np.testing.assert_array_equal(rotations.relative_transform(la, lb, "official")[:, :4], q)
  with pytest.raises(ValueError, match="canonical, official"):
    rotations.relative_quaternion(la, lb, "positive")
