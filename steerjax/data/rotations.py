"""Rotations for the 3DIEBench latent, in NumPy, batched over leading axes.

Conventions (shared with the rest of steerjax and with 3DIEBench):
- Euler angles (x, y, z) are extrinsic: R = Rz(z) @ Ry(y) @ Rx(x), as SciPy's
  `Rotation.from_euler('xyz', ...)`.
- Quaternions are scalar-last (x, y, z, w) with the canonical sign w >= 0, so a
  linear map of the quaternion (SIE's hypernetwork) never sees both q and -q.
- The relative rotation of a view pair (a -> b) is q with R_b = R_a @ R(q), i.e.
  R(q) = R_a^T R_b: the rotation in the object's own frame, as SIE's code computes it
  (`rot_1.inv() * rot_2`), so a predictor trained on either carries over.
"""

import numpy as np


def euler_to_matrix(angles: np.ndarray) -> np.ndarray:
  """[..., 3] extrinsic xyz angles -> [..., 3, 3] rotation matrices."""
  angles = np.asarray(angles, np.float64)
  cx, cy, cz = np.cos(angles[..., 0]), np.cos(angles[..., 1]), np.cos(angles[..., 2])
  sx, sy, sz = np.sin(angles[..., 0]), np.sin(angles[..., 1]), np.sin(angles[..., 2])
  rows = [
      [cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx],
      [sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx],
      [-sy, cy * sx, cy * cx],
  ]
  return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def canonical_quaternion(q: np.ndarray) -> np.ndarray:
  """Flips q to -q where w < 0 (both are the same rotation)."""
  q = np.asarray(q)
  return np.where(q[..., 3:] < 0, -q, q)


def matrix_to_quaternion(m: np.ndarray) -> np.ndarray:
  """[..., 3, 3] rotation matrices -> [..., 4] unit quaternions (x, y, z, w), w >= 0.

  Shepperd's method: take the largest of (w, x, y, z) from the diagonal, then the
  others from off-diagonal sums, so no branch divides by a small number.
  """
  m = np.asarray(m, np.float64)
  m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
  # Four candidate quaternions (scaled by 4 * their largest component).
  cand = np.stack([
      np.stack([1 + m00 - m11 - m22, m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0],
                m[..., 2, 1] - m[..., 1, 2]], -1),
      np.stack([m[..., 0, 1] + m[..., 1, 0], 1 - m00 + m11 - m22, m[..., 1, 2] + m[..., 2, 1],
                m[..., 0, 2] - m[..., 2, 0]], -1),
      np.stack([m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1], 1 - m00 - m11 + m22,
                m[..., 1, 0] - m[..., 0, 1]], -1),
      np.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1],
                1 + m00 + m11 + m22], -1),
  ], -2)
  diag = np.stack([m00, m11, m22, m00 + m11 + m22], -1)
  best = np.argmax(diag, axis=-1)
  q = np.take_along_axis(cand, best[..., None, None], axis=-2)[..., 0, :]
  q = q / np.linalg.norm(q, axis=-1, keepdims=True)
  return canonical_quaternion(q)


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
  """[..., 4] quaternions (x, y, z, w), normalised first -> [..., 3, 3]."""
  q = np.asarray(q, np.float64)
  q = q / np.linalg.norm(q, axis=-1, keepdims=True)
  x, y, z, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
  rows = [
      [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
      [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
      [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
  ]
  return np.stack([np.stack(r, axis=-1) for r in rows], axis=-2)


def relative_quaternion(latent_a: np.ndarray, latent_b: np.ndarray) -> np.ndarray:
  """q (x, y, z, w), w >= 0, with R_b = R_a @ R(q); latents [..., >=3] (angles first).

  The rotation in the object's own frame, as the official SIE code computes it
  (`rot_1.inv() * rot_2` in SciPy), so a trained predictor carries over between the two.
  """
  r_a = euler_to_matrix(np.asarray(latent_a)[..., :3])
  r_b = euler_to_matrix(np.asarray(latent_b)[..., :3])
  return matrix_to_quaternion(np.swapaxes(r_a, -1, -2) @ r_b).astype(np.float32)


def relative_transform(latent_a: np.ndarray, latent_b: np.ndarray) -> np.ndarray:
  """[..., 6] float32: relative quaternion (4), floor-hue and spot-hue differences b - a."""
  latent_a, latent_b = np.asarray(latent_a), np.asarray(latent_b)
  hue_diffs = (latent_b[..., [3, 6]] - latent_a[..., [3, 6]]).astype(np.float32)
  return np.concatenate([relative_quaternion(latent_a, latent_b), hue_diffs], axis=-1)
