"""Rotations for the 3DIEBench latent, in NumPy, batched over leading axes.

Conventions (shared with the rest of steerjax and with 3DIEBench):
- Euler angles (x, y, z) are extrinsic: R = Rz(z) @ Ry(y) @ Rx(x), as SciPy's
  `Rotation.from_euler('xyz', ...)`.
- Quaternions are scalar-last (x, y, z, w) with the canonical sign w >= 0, so a
  linear map of the quaternion (SIE's hypernetwork) never sees both q and -q.
  `sign="official"` gives instead the sign the official SIE code feeds its predictor
  (`official_relative_quaternion`), to evaluate or fine-tune a predictor it trained.
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


SIGNS = ("canonical", "official")


def relative_quaternion(latent_a: np.ndarray, latent_b: np.ndarray,
                        sign: str = "canonical") -> np.ndarray:
  """q (x, y, z, w) with R_b = R_a @ R(q); latents [..., >=3] (angles first); w >= 0, or with
  `sign="official"` the official code's sign (`official_relative_quaternion`).

  The rotation in the object's own frame, as the official SIE code computes it
  (`rot_1.inv() * rot_2` in SciPy), so a trained predictor carries over between the two.
  """
  if sign == "official":
    return official_relative_quaternion(latent_a, latent_b)
  if sign != "canonical":
    raise ValueError(f"quaternion sign {sign!r}; expected one of {', '.join(SIGNS)}")
  r_a = euler_to_matrix(np.asarray(latent_a)[..., :3])
  r_b = euler_to_matrix(np.asarray(latent_b)[..., :3])
  return matrix_to_quaternion(np.swapaxes(r_a, -1, -2) @ r_b).astype(np.float32)


def _hamilton(p: np.ndarray, q: np.ndarray) -> np.ndarray:
  """Quaternion product p q (scalar-last): the rotation q, then p (R(pq) = R(p) R(q))."""
  pv, pw, qv, qw = p[..., :3], p[..., 3:], q[..., :3], q[..., 3:]
  return np.concatenate([pw * qv + qw * pv + np.cross(pv, qv),
                         pw * qw - np.sum(pv * qv, -1, keepdims=True)], -1)


def euler_to_quaternion(angles: np.ndarray) -> np.ndarray:
  """[..., 3] extrinsic xyz angles -> q_z q_y q_x, each factor (sin(θ/2) axis, cos(θ/2)): the
  quaternion SciPy's `from_euler('xyz', ...)` holds, sign included (no canonicalisation)."""
  half = np.asarray(angles, np.float64) / 2
  out = None
  for axis in (2, 1, 0):  # extrinsic x, then y, then z: q = q_z q_y q_x
    factor = np.zeros(half.shape[:-1] + (4,))
    factor[..., axis], factor[..., 3] = np.sin(half[..., axis]), np.cos(half[..., axis])
    out = factor if out is None else _hamilton(out, factor)
  return out


def official_relative_quaternion(latent_a: np.ndarray, latent_b: np.ndarray) -> np.ndarray:
  """The official SIE dataset's relative quaternion, sign included: q_a⁻¹ q_b of the Euler
  quaternions (SciPy's `(from_euler(a).inv() * from_euler(b)).as_quat()`), w possibly < 0. Same
  rotation as `relative_quaternion`; the sign differs where its w < 0."""
  q_a = euler_to_quaternion(np.asarray(latent_a)[..., :3])
  q_b = euler_to_quaternion(np.asarray(latent_b)[..., :3])
  q_a_inv = np.concatenate([-q_a[..., :3], q_a[..., 3:]], -1)
  return _hamilton(q_a_inv, q_b).astype(np.float32)


def relative_transform(latent_a: np.ndarray, latent_b: np.ndarray,
                       sign: str = "canonical") -> np.ndarray:
  """[..., 6] float32: relative quaternion (4, `sign` as `relative_quaternion`), floor-hue and
  spot-hue differences b - a."""
  latent_a, latent_b = np.asarray(latent_a), np.asarray(latent_b)
  hue_diffs = (latent_b[..., [3, 6]] - latent_a[..., [3, 6]]).astype(np.float32)
  return np.concatenate([relative_quaternion(latent_a, latent_b, sign), hue_diffs], axis=-1)
