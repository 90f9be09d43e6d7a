"""synthetic3d: procedurally built 3D objects ray-cast in JAX, a stand-in for 3DIEBench.

Each object is a few primitives (boxes, ellipsoids, tapered cylinders) in an
asymmetric arrangement that depends on its class, with per-object proportions,
part tilts and colours. Each view draws the 3DIEBench latent (rotation X, Y, Z
extrinsic, floor hue, spotlight theta, phi, hue) and renders the object floating
above a floor, lit by a spotlight that casts shadows, seen by an orthographic
camera. Rays are intersected with the primitives analytically (no marching), so
the 2,000 x 10 default at 32x32 renders, 2x supersampled, in seconds on a CPU.

`python -m steerjax.data.synthetic3d --out sheet.png` draws a contact sheet.
"""

import argparse
import colorsys
import functools
import hashlib
import json
import os
import time
import zipfile
from concurrent import futures

import jax
import jax.numpy as jnp
import numpy as np

from steerjax.data import rotations

# Bump when the renderer or the object models change: it keys the disk cache.
RENDERER_VERSION = 1

CLASS_NAMES = ("mug", "chair", "table", "arrow", "key", "lamp", "snowman", "hammer", "boot",
               "airplane", "car", "tree")
NUM_CLASSES = len(CLASS_NAMES)

# Primitive slots per object, by kind: every object is padded to this layout so
# one compiled renderer serves all classes.
NUM_BOXES, NUM_ELLIPSOIDS, NUM_CYLINDERS = 4, 3, 3
KINDS = ("box", "ellipsoid", "cylinder")
SLOTS = dict(box=NUM_BOXES, ellipsoid=NUM_ELLIPSOIDS, cylinder=NUM_CYLINDERS)

FLOOR_Z = -1.35
VIEW_HALF_WIDTH = 1.15
CAMERA_ELEVATION = np.deg2rad(25.0)
OBJECT_RADIUS = 1.15
SUPERSAMPLE = 2
RENDER_BATCH = 200
_INF = 1e9


# ----------------------------------------------------------------------------- object models


class _Parts:
  """Collects the primitives of one object; `tone` 1 picks the object's accent colour."""

  def __init__(self, rng: np.random.Generator):
    self.rng = rng
    self.items = []

  def j(self, x, rel=0.15):
    """Jitters a size or position by up to +-rel of itself (per-object variation)."""
    return np.asarray(x, np.float64) * self.rng.uniform(1 - rel, 1 + rel, np.shape(x))

  def tilt(self, euler=(0.0, 0.0, 0.0), amount=0.1):
    return np.asarray(euler, np.float64) + self.rng.uniform(-amount, amount, 3)

  def box(self, center, half, euler=(0, 0, 0), tone=0):
    self.items.append(("box", center, half, euler, 0.0, tone))

  def ellipsoid(self, center, radii, euler=(0, 0, 0), tone=0):
    self.items.append(("ellipsoid", center, radii, euler, 0.0, tone))

  def cylinder(self, center, radius, half_length, euler=(0, 0, 0), taper=0.0, tone=0):
    """Axis along the local z; `radius` at the wide end, taper in [-1, 1] narrows the +z end
    (-1: a cone with its tip at +z)."""
    r = radius / (1 + abs(taper))  # canonical radius at z = 0; it scales by (1 + taper * z)
    self.items.append(("cylinder", center, (r, r, half_length), euler, taper, tone))


_X_AXIS = (0.0, np.pi / 2, 0.0)  # Euler angles that turn the local z axis onto x.
_Y_AXIS = (-np.pi / 2, 0.0, 0.0)  # ... onto y.


def _mug(p):
  r, h = p.j(0.5), p.j(0.6)
  p.cylinder((0, 0, 0), r, h)
  p.ellipsoid((0, 0, h), (0.8 * r, 0.8 * r, 0.06), tone=1)  # the drink, seen from above
  reach, z = p.j(0.38), p.j(0.36)
  p.box((r + reach / 2, 0, z), (reach / 2 + 0.04, 0.08, 0.08))
  p.box((r + reach / 2, 0, -z), (reach / 2 + 0.04, 0.08, 0.08))
  p.box((r + reach, 0, 0), (0.08, 0.08, z + 0.08))


def _chair(p):
  w, d, leg = p.j(0.48), p.j(0.48), p.j(0.5)
  p.box((0, 0, 0), (w, d, 0.07))
  p.box((0, d - 0.06, p.j(0.5)), (w, 0.06, p.j(0.45)), euler=p.tilt((-0.15, 0, 0), 0.1), tone=1)
  for sx in (-1, 1):
    p.box((sx * (w - 0.07), -(d - 0.07), -leg), (0.06, 0.06, leg))
    p.cylinder((sx * (w - 0.07), d - 0.07, -leg), 0.06, leg)


def _table(p):
  w, d, leg = p.j(0.85), p.j(0.55), p.j(0.5)
  p.box((0, 0, leg), (w, d, 0.07), tone=1)
  p.cylinder((w - 0.1, d - 0.1, 0), 0.07, leg)
  p.cylinder((-(w - 0.1), d - 0.1, 0), 0.07, leg)
  p.cylinder((-(w - 0.1), -(d - 0.1), 0), 0.07, leg)
  short = p.j(0.25)
  p.box((w - 0.1, -(d - 0.1), leg - short), (0.07, 0.07, short))
  # A shelf standing on one back corner of the top makes the table's pose readable from above.
  sw, sh = p.j(0.3), p.j(0.25)
  p.box((-(w - sw), d - 0.12, leg + 0.07 + sh), (sw, 0.12, sh))


def _arrow(p):
  length = p.j(0.65)
  p.cylinder((-0.1, 0, 0), p.j(0.13), length, euler=_X_AXIS)
  p.cylinder((length + 0.05, 0, 0), p.j(0.3), p.j(0.3), euler=_X_AXIS, taper=-1.0, tone=1)
  tail = -0.1 - length + 0.2
  p.box((tail, 0, p.j(0.25)), (0.22, 0.04, p.j(0.2)), tone=1)
  p.box((tail, p.j(0.2), 0), (0.18, p.j(0.15), 0.04))


def _key(p):
  p.cylinder((-0.6, 0, 0), p.j(0.35), 0.08, euler=_Y_AXIS, tone=1)
  p.ellipsoid((-0.6, 0, 0), (0.12, 0.12, 0.12))
  length = p.j(0.6)
  p.box((length - 0.3, 0, 0), (length, 0.07, 0.09))
  for x, h in ((0.3, 0.22), (0.55, 0.32), (0.78, 0.18)):
    p.box((p.j(x, 0.08), 0, -0.09 - h / 2), (0.07, 0.07, p.j(h / 2)))


def _lamp(p):
  p.cylinder((0, 0, -0.75), p.j(0.4), 0.07, tone=1)
  a1 = p.tilt((0, 0.35, 0), 0.15)
  p.box((0.12, 0, -0.3), (0.07, 0.07, p.j(0.45)), euler=a1)
  p.box((0.35, 0, 0.35), (0.07, 0.07, p.j(0.3)), euler=p.tilt((0, -0.9, 0), 0.15))
  p.cylinder((0.62, 0, 0.3), p.j(0.4), p.j(0.22), euler=p.tilt((0, 0.5, 0), 0.15), taper=-0.6, tone=1)
  p.ellipsoid((0.55, 0, 0.15), (0.12, 0.12, 0.12))


def _snowman(p):
  r0, r1, r2 = p.j(0.45), p.j(0.33), p.j(0.23)
  z0, z1 = -0.5, -0.5 + r0 + r1 * 0.7
  z2 = z1 + r1 + r2 * 0.7
  p.ellipsoid((0, 0, z0), (r0, r0, r0 * 0.9))
  p.ellipsoid((0, 0, z1), (r1, r1, r1))
  p.ellipsoid((0, 0, z2), (r2, r2, r2))
  p.cylinder((0, -r2 - 0.1, z2), 0.1, p.j(0.16), euler=(np.pi / 2, 0, 0), taper=-1.0, tone=1)
  p.cylinder((0.03, 0, z2 + r2), 0.17, 0.1, euler=p.tilt(amount=0.2), tone=1)
  p.box((r1 + 0.15, 0, z1 + 0.1), (0.25, 0.035, 0.035), euler=p.tilt((0, -0.6, 0), 0.2))


def _hammer(p):
  p.cylinder((0, 0, -0.25), p.j(0.08), p.j(0.7), tone=1)
  hw = p.j(0.35)
  p.box((0, 0, 0.5), (hw, 0.12, 0.12))
  p.cylinder((hw + 0.08, 0, 0.5), 0.15, 0.09, euler=_X_AXIS)
  p.box((-hw - 0.15, 0, 0.4), (0.22, 0.1, 0.06), euler=(0, -0.5, 0))


def _boot(p):
  h, foot = p.j(0.45), p.j(0.5)
  p.box((-0.25, 0, 0.2), (0.25, 0.25, h))
  p.box((foot - 0.5, 0, -0.35), (foot, 0.25, 0.15))
  p.ellipsoid((2 * foot - 0.5, 0, -0.35), (0.25, 0.25, 0.15))
  p.box((foot - 0.5, 0, -0.52), (foot + 0.2, 0.27, 0.04), tone=1)
  p.box((-0.25, 0, 0.2 + h), (0.28, 0.28, 0.05), tone=1)


def _airplane(p):
  length = p.j(0.95)
  p.ellipsoid((0, 0, 0), (length, 0.16, 0.16))
  p.box((0.05, 0, 0), (p.j(0.22), p.j(0.85), 0.035), euler=p.tilt(amount=0.05))
  p.box((-length + 0.15, 0, p.j(0.22)), (0.14, 0.035, 0.2), euler=(0, 0.3, 0), tone=1)
  p.box((-length + 0.1, 0, 0.05), (0.1, p.j(0.32), 0.03))
  p.ellipsoid((length * 0.5, 0, 0.1), (0.22, 0.1, 0.1), tone=1)


def _car(p):
  length, width = p.j(0.85), p.j(0.42)
  p.box((0, 0, -0.2), (length, width, 0.18))
  p.box((-0.15 * length, 0, 0.12), (p.j(0.45), width - 0.04, 0.15), tone=1)
  for x in (0.6, -0.6):
    p.cylinder((x * length, 0, -0.38), 0.2, width + 0.05, euler=_Y_AXIS, tone=1)
  p.ellipsoid((length, 0.25, -0.15), (0.06, 0.09, 0.07))
  p.ellipsoid((length, -0.25, -0.15), (0.06, 0.09, 0.07))
  p.box((-length + 0.05, 0, 0.05), (0.08, width, 0.03), tone=1)


def _tree(p):
  p.cylinder((0, 0, -0.45), p.j(0.12), p.j(0.45), tone=1)
  p.ellipsoid((0, 0, 0.25), p.j((0.45, 0.45, 0.4)))
  p.ellipsoid((p.j(0.35), 0.1, 0.55), p.j((0.3, 0.3, 0.28)))
  p.ellipsoid((-0.25, -0.15, p.j(0.65)), p.j((0.22, 0.22, 0.2)))
  p.box((-0.3, 0, -0.25), (0.22, 0.04, 0.04), euler=p.tilt((0, 0.6, 0), 0.2), tone=1)


_BUILDERS = (_mug, _chair, _table, _arrow, _key, _lamp, _snowman, _hammer, _boot, _airplane, _car, _tree)
assert len(_BUILDERS) == NUM_CLASSES


def _hsv(h, s, v):
  return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v))


def _build_object(label: int, rng: np.random.Generator) -> dict:
  """One object's primitives in the padded slot layout, centred and scaled to a fixed radius."""
  parts = _Parts(rng)
  _BUILDERS[label](parts)
  hue = rng.uniform()
  colours = (_hsv(hue, rng.uniform(0.45, 0.85), rng.uniform(0.6, 0.9)),
             _hsv(hue + rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.8), rng.uniform(0.3, 0.85)))
  # Normalise position and size by the corners of each part's bounding box.
  corners = []
  for _, center, half, euler, taper, _ in parts.items:
    signs = np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).reshape(3, -1).T
    rot = rotations.euler_to_matrix(np.asarray(euler, np.float64))
    extent = np.asarray(half) * (1 + abs(taper), 1 + abs(taper), 1)
    corners.append(np.asarray(center) + (signs * extent) @ rot.T)
  corners = np.concatenate(corners)
  shift = (corners.max(0) + corners.min(0)) / 2
  scale = OBJECT_RADIUS / np.linalg.norm(corners - shift, axis=-1).max() * rng.uniform(0.9, 1.1)
  out = {}
  for kind in KINDS:
    items = [it for it in parts.items if it[0] == kind]
    assert len(items) <= SLOTS[kind], (CLASS_NAMES[label], kind)
    n = SLOTS[kind]
    arr = dict(center=np.zeros((n, 3)), half=np.ones((n, 3)), rot=np.tile(np.eye(3), (n, 1, 1)),
               taper=np.zeros(n), colour=np.zeros((n, 3)), on=np.zeros(n))
    for i, (_, center, half, euler, taper, tone) in enumerate(items):
      arr["center"][i] = (np.asarray(center) - shift) * scale
      arr["half"][i] = np.asarray(half) * scale
      arr["rot"][i] = rotations.euler_to_matrix(np.asarray(euler, np.float64))
      arr["taper"][i] = taper
      arr["colour"][i] = colours[tone]
      arr["on"][i] = 1.0
    out.update({f"{kind}_{k}": v.astype(np.float32) for k, v in arr.items()})
  return out


# ----------------------------------------------------------------------------- latents


def sample_latents(rng: np.random.Generator, n: int) -> np.ndarray:
  """[n, 7] float32 in 3DIEBench's ranges (see the module docstring)."""
  return np.stack([
      rng.uniform(-np.pi / 2, np.pi / 2, n),
      rng.uniform(-np.pi / 2, np.pi / 2, n),
      rng.uniform(-np.pi / 2, np.pi / 2, n),
      rng.uniform(0, 1, n),
      rng.uniform(0, np.pi / 4, n),
      rng.uniform(0, 2 * np.pi, n),
      rng.uniform(0, 1, n),
  ], -1).astype(np.float32)


# ----------------------------------------------------------------------------- renderer


def _camera():
  el = CAMERA_ELEVATION
  forward = np.array([0.0, np.cos(el), -np.sin(el)])
  right = np.array([1.0, 0.0, 0.0])
  up = np.cross(right, forward)
  return -5.0 * forward, forward, right, up


def _hsv_to_rgb(h, s, v):
  """jnp version of colorsys.hsv_to_rgb for traced hues."""
  k = jnp.array([5.0, 3.0, 1.0])
  t = jnp.mod(k + h * 6.0, 6.0)
  return v - v * s * jnp.clip(jnp.minimum(t, 4.0 - t), 0.0, 1.0)


def _first_hit(kind, oc, dc, taper, tmin):
  """Distance to the first intersection after tmin with a canonical primitive, else _INF.

  oc [n, P, 3] ray origins and dc [n, 1 or P, 3] directions in each primitive's
  canonical frame (unit cube, unit sphere, or tapered unit cylinder); distances
  along an affinely mapped ray are the same as in world space.
  """
  def pick(t0, t1, ok):
    t = jnp.where(t0 > tmin, t0, jnp.where(t1 > tmin, t1, _INF))
    return jnp.where(ok, t, _INF)

  if kind == "box":
    dc = jnp.where(jnp.abs(dc) < 1e-9, 1e-9, dc)
    ta, tb = (-1.0 - oc) / dc, (1.0 - oc) / dc
    tn = jnp.max(jnp.minimum(ta, tb), -1)
    tf = jnp.min(jnp.maximum(ta, tb), -1)
    return pick(tn, tf, tn <= tf)
  if kind == "ellipsoid":
    a = jnp.sum(dc * dc, -1)
    b = jnp.sum(oc * dc, -1)
    c = jnp.sum(oc * oc, -1) - 1.0
    disc = b * b - a * c
    sq = jnp.sqrt(jnp.maximum(disc, 0.0))
    return pick((-b - sq) / a, (-b + sq) / a, disc >= 0)
  # Tapered cylinder: x^2 + y^2 = (1 + k z)^2 on |z| <= 1, closed by two caps.
  k = taper[:, None]
  g = 1.0 + k * oc[..., 2]
  h = k * dc[..., 2]
  a = dc[..., 0] ** 2 + dc[..., 1] ** 2 - h * h
  a = jnp.where(jnp.abs(a) < 1e-9, 1e-9, a)
  b = oc[..., 0] * dc[..., 0] + oc[..., 1] * dc[..., 1] - g * h
  c = oc[..., 0] ** 2 + oc[..., 1] ** 2 - g * g
  disc = b * b - a * c
  sq = jnp.sqrt(jnp.maximum(disc, 0.0))
  best = jnp.full(oc.shape[:-1], _INF)
  for t in ((-b - sq) / a, (-b + sq) / a):
    z = oc[..., 2] + t * dc[..., 2]
    ok = (disc >= 0) & (jnp.abs(z) <= 1.0) & (t > tmin)
    best = jnp.where(ok & (t < best), t, best)
  dz = jnp.where(jnp.abs(dc[..., 2]) < 1e-9, 1e-9, dc[..., 2])
  for side in (-1.0, 1.0):
    t = (side - oc[..., 2]) / dz
    x, y = oc[..., 0] + t * dc[..., 0], oc[..., 1] + t * dc[..., 1]
    ok = (x * x + y * y <= (1.0 + k * side) ** 2) & (t > tmin)
    best = jnp.where(ok & (t < best), t, best)
  return best


def _canonical_normal(kind, pc, taper):
  if kind == "box":
    axis = jnp.argmax(jnp.abs(pc), -1)
    return jax.nn.one_hot(axis, 3) * jnp.sign(pc)
  if kind == "ellipsoid":
    return pc
  side = jnp.stack([pc[..., 0], pc[..., 1], -taper * (1.0 + taper * pc[..., 2])], -1)
  cap = jnp.zeros_like(pc).at[..., 2].set(jnp.sign(pc[..., 2]))
  return jnp.where(jnp.abs(pc[..., 2:]) > 0.999, cap, side)


def _render_one(obj, latent, size):
  """One view, [size, size, 3] float32 in [0, 1]; `obj` holds one object's slot arrays.

  Primary rays are supersampled SUPERSAMPLE x SUPERSAMPLE per pixel; shadow rays,
  a third of the cost, are cast once per pixel.
  """
  origin, forward, right, up = (jnp.asarray(v, jnp.float32) for v in _camera())
  hi = size * SUPERSAMPLE
  coords = (jnp.arange(hi, dtype=jnp.float32) + 0.5) / hi * 2 - 1
  u = jnp.tile(coords, hi) * VIEW_HALF_WIDTH
  v = -jnp.repeat(coords, hi) * VIEW_HALF_WIDTH
  pix_origin = origin + u[:, None] * right + v[:, None] * up  # [P, 3]

  rot = _euler_to_matrix_jnp(latent[:3])
  theta, phi = latent[4], latent[5]
  light = jnp.stack([jnp.sin(theta) * jnp.cos(phi), jnp.sin(theta) * jnp.sin(phi), jnp.cos(theta)])
  light_colour = _hsv_to_rgb(latent[6], 0.55, 1.0)
  floor_colour = _hsv_to_rgb(latent[3], 0.4, 0.8)

  frames = {}
  for kind in KINDS:
    part_rot = rot @ obj[f"{kind}_rot"]  # [n, 3, 3] part frame -> world
    to_canon = jnp.swapaxes(part_rot, -1, -2) / obj[f"{kind}_half"][:, :, None]  # world -> canonical
    centre = obj[f"{kind}_center"] @ rot.T
    frames[kind] = (to_canon, centre, part_rot / obj[f"{kind}_half"][:, None, :])

  def cast(origins_of, direction, tmin):
    """Per kind: (t [n, P], canonical origins [n, P, 3], canonical direction [n, 1, 3])."""
    out = {}
    for kind in KINDS:
      to_canon, centre, _ = frames[kind]
      oc = origins_of(to_canon, centre)
      dc = (to_canon @ direction)[:, None, :]
      t = _first_hit(kind, oc, dc, obj[f"{kind}_taper"], tmin)
      out[kind] = (jnp.where(obj[f"{kind}_on"][:, None] > 0, t, _INF), oc, dc)
    return out

  # Primary rays: canonical origins are affine in (u, v), so no per-pixel matrix product.
  def primary_origins(to_canon, centre):
    base = jnp.einsum("nij,nj->ni", to_canon, origin - centre)
    return (base[:, None, :] + u[None, :, None] * (to_canon @ right)[:, None, :]
            + v[None, :, None] * (to_canon @ up)[:, None, :])

  hits = cast(primary_origins, forward, 0.0)
  t_obj = jnp.full(u.shape, _INF)
  normal = jnp.zeros(u.shape + (3,))
  albedo = jnp.zeros(u.shape + (3,))
  for kind in KINDS:
    t, oc, dc = hits[kind]
    idx = jnp.argmin(t, 0)
    t_k = jnp.take_along_axis(t, idx[None], 0)[0]
    oc_k = jnp.take_along_axis(oc, idx[None, :, None], 0)[0]
    pc = oc_k + t_k[:, None] * dc[idx, 0]
    n_c = _canonical_normal(kind, pc, obj[f"{kind}_taper"][idx])
    n_w = jnp.einsum("pij,pj->pi", frames[kind][2][idx], n_c)
    closer = t_k < t_obj
    t_obj = jnp.where(closer, t_k, t_obj)
    normal = jnp.where(closer[:, None], n_w, normal)
    albedo = jnp.where(closer[:, None], obj[f"{kind}_colour"][idx], albedo)
  normal = normal / (jnp.linalg.norm(normal, axis=-1, keepdims=True) + 1e-12)

  t_floor = (FLOOR_Z - pix_origin[:, 2]) / forward[2]
  on_object = t_obj < t_floor
  t_hit = jnp.where(on_object, t_obj, t_floor)
  normal = jnp.where(on_object[:, None], normal, jnp.array([0.0, 0.0, 1.0]))
  normal = jnp.where(jnp.sum(normal * forward, -1, keepdims=True) > 0, -normal, normal)
  albedo = jnp.where(on_object[:, None], albedo, floor_colour)
  point = pix_origin + t_hit[:, None] * forward + 1e-3 * normal

  # Shadow rays towards the light: any primitive in the way darkens the point.
  def shadow_origins(to_canon, centre):
    return jnp.einsum("nij,pj->npi", to_canon, per_pixel(point)) - jnp.einsum("nij,nj->ni", to_canon, centre)[:, None]

  def per_pixel(x):
    return x.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE, *x.shape[1:])[:, 0, :, 0].reshape(size * size, *x.shape[1:])

  blocked = cast(shadow_origins, light, 1e-4)
  lit = jnp.ones(size * size)
  for kind in KINDS:
    lit = jnp.where(jnp.min(blocked[kind][0], 0) < _INF, 0.0, lit)
  lit = jnp.repeat(jnp.repeat(lit.reshape(size, 1, size, 1), SUPERSAMPLE, 1), SUPERSAMPLE, 3).reshape(-1)

  # A spotlight 6 units away along `light`, aimed at the origin, with a soft cone.
  to_point = point - 6.0 * light
  cos_angle = -jnp.sum(to_point * light, -1) / jnp.linalg.norm(to_point, axis=-1)
  spot = jnp.clip((cos_angle - np.cos(0.42)) / (np.cos(0.25) - np.cos(0.42)), 0.0, 1.0)
  diffuse = jnp.maximum(jnp.sum(normal * light, -1), 0.0) * lit * spot
  reflect = 2 * jnp.sum(normal * light, -1, keepdims=True) * normal - light
  specular = jnp.maximum(-jnp.sum(reflect * forward, -1), 0.0) ** 16 * lit * spot * on_object
  colour = albedo * (0.3 + 0.9 * diffuse[:, None] * light_colour) + 0.25 * specular[:, None] * light_colour
  colour = jnp.clip(colour, 0.0, 1.0) ** (1 / 2.2)
  return colour.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE, 3).mean((1, 3))


def _euler_to_matrix_jnp(angles):
  """R = Rz(z) Ry(y) Rx(x) for traced angles (the jnp twin of rotations.euler_to_matrix)."""
  cx, cy, cz = jnp.cos(angles)
  sx, sy, sz = jnp.sin(angles)
  return jnp.array([
      [cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx],
      [sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx],
      [-sy, cy * sx, cy * cx],
  ])


@functools.partial(jax.jit, static_argnames="size")
def render(objects: dict, latents: jax.Array, size: int) -> jax.Array:
  """Renders a batch of views: objects' slot arrays [B, ...], latents [B, 7] -> uint8 [B, size, size, 3].

  """
  images = jax.vmap(lambda o, l: _render_one(o, l, size))(objects, latents)
  return jnp.round(images * 255).astype(jnp.uint8)


# ----------------------------------------------------------------------------- dataset


def build_objects(num_objects: int, seed: int) -> tuple[np.ndarray, dict]:
  """Labels (balanced: object index mod NUM_CLASSES) and stacked slot arrays of every object."""
  labels = (np.arange(num_objects) % NUM_CLASSES).astype(np.int32)
  rng = np.random.default_rng([seed, 0])
  objs = [_build_object(int(label), rng) for label in labels]
  return labels, {k: np.stack([o[k] for o in objs]) for k in objs[0]}


def generate(num_objects: int, views_per_object: int, image_size: int, seed: int) -> dict:
  """Renders num_objects x views_per_object views (object-major); see the module docstring.

  Returns NumPy arrays: image uint8 [N, H, W, 3], label int32 [N], latent float32
  [N, 7], object_id int32 [N], view_id int32 [N]. The same arguments give the
  same bytes on the same platform.
  """
  labels, objects = build_objects(num_objects, seed)
  n = num_objects * views_per_object
  latent = sample_latents(np.random.default_rng([seed, 1]), n)
  object_id = np.repeat(np.arange(num_objects, dtype=np.int32), views_per_object)

  def render_chunk(start):
    stop = min(start + RENDER_BATCH, n)
    ids = np.pad(object_id[start:stop], (0, RENDER_BATCH - (stop - start)), mode="edge")
    lat = np.pad(latent[start:stop], ((0, RENDER_BATCH - (stop - start)), (0, 0)), mode="edge")
    batch = {k: v[ids] for k, v in objects.items()}
    return np.asarray(render(batch, lat, image_size))[:stop - start]

  # The first chunk compiles; then two host threads keep both cores busy (XLA
  # releases the GIL while it runs).
  first = render_chunk(0)
  with futures.ThreadPoolExecutor(2) as pool:
    image = np.concatenate([first, *pool.map(render_chunk, range(RENDER_BATCH, n, RENDER_BATCH))])
  return dict(image=image, label=labels[object_id], latent=latent, object_id=object_id,
              view_id=np.tile(np.arange(views_per_object, dtype=np.int32), num_objects))


def cache_dir() -> str:
  return os.environ.get("STEERJAX_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "steerjax"))


def cache_path(num_objects: int, views_per_object: int, image_size: int, seed: int) -> str:
  key = json.dumps(dict(n=num_objects, v=views_per_object, s=image_size, seed=seed, r=RENDERER_VERSION),
                   sort_keys=True)
  digest = hashlib.sha256(key.encode()).hexdigest()[:16]
  name = f"synthetic3d_{num_objects}x{views_per_object}_{image_size}px_seed{seed}_{digest}.npz"
  return os.path.join(cache_dir(), name)


def load(num_objects: int, views_per_object: int, image_size: int, seed: int) -> dict:
  """generate(...) through a disk cache keyed by the arguments and RENDERER_VERSION."""
  path = cache_path(num_objects, views_per_object, image_size, seed)
  if os.path.exists(path):
    try:
      with np.load(path) as f:
        cached = {k: f[k] for k in f.files}
      if len(cached.get("image", ())) == num_objects * views_per_object:
        return cached
      problem = "it holds another number of images"
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # truncated or garbled
      problem = f"{type(e).__name__}: {e}"
    # A cache is rebuilt, never trusted: rendering is deterministic, so nothing is lost.
    print(f"warning: the synthetic3d cache {path} is unreadable ({problem}); rendering it again",
          flush=True)
  data = generate(num_objects, views_per_object, image_size, seed)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.{os.getpid()}.tmp"
  with open(tmp, "wb") as f:
    np.savez(f, **data)
  os.replace(tmp, path)  # atomic: a concurrent reader sees the old state or the whole file
  return data


def split_by_object(data: dict, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Example indices (train, val): a seeded, class-stratified choice of whole objects for val."""
  object_ids = np.unique(data["object_id"])
  object_labels = np.zeros(object_ids.max() + 1, np.int64)
  object_labels[data["object_id"]] = data["label"]
  rng = np.random.default_rng([seed, 2])
  val_objects = []
  for label in np.unique(object_labels[object_ids]):
    members = rng.permutation(object_ids[object_labels[object_ids] == label])
    val_objects.append(members[:int(round(val_fraction * len(members)))])
  is_val = np.isin(data["object_id"], np.concatenate(val_objects))
  return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def contact_sheet(views_per_class: int = 8, image_size: int = 64, seed: int = 0) -> np.ndarray:
  """uint8 image: one row per class, `views_per_class` views of (two) objects each."""
  data = generate(2 * NUM_CLASSES, views_per_class // 2, image_size, seed)
  rows = []
  for label in range(NUM_CLASSES):
    rows.append(np.concatenate(list(data["image"][data["label"] == label]), axis=1))
  return np.concatenate(rows, axis=0)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="synthetic3d_sheet.png", help="PNG path of the contact sheet")
  parser.add_argument("--size", type=int, default=64)
  parser.add_argument("--views", type=int, default=8, help="views per class (two objects per class)")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  from PIL import Image  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  sheet = contact_sheet(args.views, args.size, args.seed)
  Image.fromarray(sheet).save(args.out)
  print(f"wrote {args.out}: {NUM_CLASSES} classes ({', '.join(CLASS_NAMES)}) x {args.views} views "
        f"at {args.size}px in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
  main()
