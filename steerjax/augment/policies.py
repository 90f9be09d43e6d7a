"""Augmentation policies: sample parameters from a key, apply them, encode them.

A `Policy` is a frozen (hashable) dataclass, so it can be a static jit argument.
Its parameters are a dict of arrays, one example each (vmap for batches):

  box        float32 [4]  top, left, height, width as fractions of the source
  flip       bool
  jitter     bool         colour jitter applied
  order      int32 [4]    jitter ops in the order applied (ops.BRIGHTNESS ...)
  factors    float32 [4]  brightness, contrast, saturation, hue delta
  grayscale  bool
  blur       bool
  sigma      float32      blur sigma in pixels of the output
  solarize   bool

Ops not applied carry identity values: order (0, 1, 2, 3), factors (1, 1, 1, 0),
sigma 0. `encode` lays them out as EquiMod does (`ENCODING`, 18 entries; the
solarize flag is always present, constant 0 for policies that never solarize,
so every policy has the same width) and standardises each entry with the
policy's exact mean and standard deviation (`encoding_stats`).
"""

import dataclasses
import functools
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from steerjax.augment import ops

ENCODING = ("top", "left", "height", "width", "flip",
            "jitter", "order0", "order1", "order2", "order3",
            "brightness", "contrast", "saturation", "hue", "grayscale",
            "blur", "sigma", "solarize")
RELATIVE = ("d_center_y", "d_center_x", "d_height", "d_width",
            "d_brightness", "d_contrast", "d_saturation", "d_hue")
CROP_TRIES = 10  # torchvision RandomResizedCrop's attempts before its fallback.
_IDENTITY_FACTORS = (1.0, 1.0, 1.0, 0.0)
# Uniforms drawn per example, in one call (few PRNG hashes compile and run fast):
# crop (10 areas, 10 ratios, top, left), jitter flag, 4 factors, 4 for the order,
# blur flag, sigma, and the flip, grayscale and solarize flags.
_UNIFORMS = (2 * CROP_TRIES + 2, 1, 4, 4, 1, 1, 3)


@dataclasses.dataclass(frozen=True)
class Policy:
  """One view's augmentation pipeline, in torchvision's order.

  RandomResizedCrop(crop_scale, crop_ratio) -> flip -> ColorJitter(jitter) with
  probability jitter_p -> grayscale -> Gaussian blur (sigma ~ U(blur_sigma),
  kernel 10% of the output side, made odd) -> solarize.
  """
  name: str
  crop_scale: tuple[float, float] = (0.08, 1.0)
  crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
  flip_p: float = 0.5
  jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
  jitter_p: float = 0.0
  grayscale_p: float = 0.0
  blur_p: float = 0.0
  blur_sigma: tuple[float, float] = (0.1, 2.0)
  solarize_p: float = 0.0

  def __post_init__(self):
    for field in ("crop_scale", "crop_ratio", "jitter", "blur_sigma"):
      object.__setattr__(self, field, tuple(float(v) for v in getattr(self, field)))
    _validate(self)

  @property
  def param_dim(self) -> int:
    return len(ENCODING)

  @staticmethod
  def blur_kernel_size(size: int) -> int:
    """SimCLR's kernel: 10% of the side, made odd (23 at 224, 3 at 32)."""
    return 2 * (int(0.1 * size) // 2) + 1

  def sample(self, key, source_size: tuple[int, int] | None = None) -> dict[str, jax.Array]:
    """Draws one example's parameters as torchvision's transforms would.

    With `source_size` (height, width) the crop box lies on that pixel grid,
    exactly as RandomResizedCrop; without it the box is continuous (the limit
    of a large source).
    """
    crop_u, jitter_u, factor_u, order_u, blur_u, sigma_u, flag_u = jnp.split(
        jax.random.uniform(key, (sum(_UNIFORMS),)), np.cumsum(_UNIFORMS)[:-1])
    jitter = jitter_u[0] < self.jitter_p
    low = np.array([max(0.0, 1.0 - v) for v in self.jitter[:3]] + [-self.jitter[3]])
    high = np.array([1.0 + v for v in self.jitter[:3]] + [self.jitter[3]])
    blur = blur_u[0] < self.blur_p
    sigma = self.blur_sigma[0] + (self.blur_sigma[1] - self.blur_sigma[0]) * sigma_u[0]
    flip, grayscale, solarize = flag_u < jnp.array([self.flip_p, self.grayscale_p, self.solarize_p])
    return dict(
        box=_sample_box(crop_u, self.crop_scale, self.crop_ratio, source_size),
        flip=flip,
        jitter=jitter,
        # argsort of i.i.d. uniforms: a uniformly random permutation, as randperm(4).
        order=jnp.where(jitter, jnp.argsort(order_u), jnp.arange(4)).astype(jnp.int32),
        factors=jnp.where(jitter, low + (high - low) * factor_u, jnp.array(_IDENTITY_FACTORS)),
        grayscale=grayscale,
        blur=blur,
        sigma=jnp.where(blur, sigma, 0.0),
        solarize=solarize)

  def apply(self, image, params, size: int):
    """Applies one example's parameters to a float image [H, W, 3] -> [size, size, 3].

    Ops this policy never uses are left out of the graph (static), the others
    are computed and selected by their flags (the blur by its sigma, 0 where not
    applied), so it vmaps without branches.
    """
    image = ops.resized_crop(image, params["box"], size)
    image = ops.hflip(image, params["flip"])
    if self.jitter_p > 0:
      jittered = ops.color_jitter(image, params["factors"], params["order"])
      image = jnp.where(params["jitter"], jittered, image)
    if self.grayscale_p > 0:
      image = ops.grayscale(image, params["grayscale"])
    if self.blur_p > 0:
      image = ops.gaussian_blur(image, params["sigma"], self.blur_kernel_size(size))  # sigma 0: unblurred
    if self.solarize_p > 0:
      image = ops.solarize(image, params["solarize"])
    return image

  def encode(self, params) -> jax.Array:
    """Standardised EquiMod vector [..., 18] (layout `ENCODING`)."""
    mean, std = self.encoding_stats()
    return (raw_vector(params) - mean) / std

  def encoding_stats(self) -> tuple[np.ndarray, np.ndarray]:
    """Exact mean and std of each raw entry under this policy (std 1 where constant)."""
    return _encoding_stats(self)


def raw_vector(params) -> jax.Array:
  """Parameters as an unstandardised float vector [..., 18] in `ENCODING` order."""
  vector = lambda name: jnp.asarray(params[name], jnp.float32)
  scalar = lambda name: vector(name)[..., None]
  return jnp.concatenate([
      vector("box"), scalar("flip"), scalar("jitter"), vector("order"), vector("factors"),
      scalar("grayscale"), scalar("blur"), scalar("sigma"), scalar("solarize")], axis=-1)


def relative(params_a, params_b) -> jax.Array:
  """AugSelf's targets: view b minus view a, [..., 8] in `RELATIVE` order.

  Crop centre (y, x) and size (height, width) as fractions of the source, and
  the four colour-jitter factors (identity values where jitter was not applied).
  Unstandardised, as AugSelf regresses them.
  """
  def geometry(params):
    top, left, height, width = jnp.moveaxis(jnp.asarray(params["box"], jnp.float32), -1, 0)
    return jnp.stack([top + height / 2, left + width / 2, height, width], axis=-1)

  return jnp.concatenate([geometry(params_b) - geometry(params_a),
                          jnp.asarray(params_b["factors"]) - jnp.asarray(params_a["factors"])], axis=-1)


def _fallback_size(height, width, ratio, snap):
  """RandomResizedCrop's fallback: the largest centred crop with a clamped ratio."""
  in_ratio = width / height
  if in_ratio < ratio[0]:
    return snap(width / ratio[0]), width
  if in_ratio > ratio[1]:
    return height, snap(height * ratio[1])
  return height, width


def _sample_box(uniforms, scale, ratio, source_size):
  """torchvision's RandomResizedCrop.get_params with its 10 tries drawn at once.

  `uniforms` [22]: 10 for the areas, 10 for the log ratios, then top and left.
  The first try that fits wins (argmax over the tries), else the fallback.
  """
  grid = source_size is not None
  height, width = source_size if grid else (1.0, 1.0)
  snap = jnp.round if grid else (lambda v: v)  # round half to even, as Python's round.
  area = height * width * (scale[0] + (scale[1] - scale[0]) * uniforms[:CROP_TRIES])
  log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
  aspect = jnp.exp(log_low + (log_high - log_low) * uniforms[CROP_TRIES:2 * CROP_TRIES])
  crop_w, crop_h = snap(jnp.sqrt(area * aspect)), snap(jnp.sqrt(area / aspect))
  fits = (crop_w > 0) & (crop_w <= width) & (crop_h > 0) & (crop_h <= height)
  first, found = jnp.argmax(fits), jnp.any(fits)
  fallback_h, fallback_w = _fallback_size(height, width, ratio, round if grid else (lambda v: v))
  crop_h = jnp.where(found, crop_h[first], fallback_h)
  crop_w = jnp.where(found, crop_w[first], fallback_w)
  u_top, u_left = uniforms[2 * CROP_TRIES], uniforms[2 * CROP_TRIES + 1]
  if grid:  # randint(0, height - h + 1), and the fallback's floor division.
    top = jnp.where(found, jnp.floor(u_top * (height - crop_h + 1)), (height - fallback_h) // 2)
    left = jnp.where(found, jnp.floor(u_left * (width - crop_w + 1)), (width - fallback_w) // 2)
  else:
    top = jnp.where(found, u_top * (1 - crop_h), (1 - fallback_h) / 2)
    left = jnp.where(found, u_left * (1 - crop_w), (1 - fallback_w) / 2)
  return jnp.stack([top / height, left / width, crop_h / height, crop_w / width]).astype(jnp.float32)


def _mixture_moments(p, low, high, identity):
  """Mean and second moment of: U(low, high) with probability p, else identity."""
  mean_u = (low + high) / 2
  second_u = (high - low) ** 2 / 12 + mean_u ** 2
  return p * mean_u + (1 - p) * identity, p * second_u + (1 - p) * identity ** 2


def _crop_moments(scale, ratio, n=1000):
  """Moments of (top, left, height, width) for a square source (continuous box).

  One try is (area, log ratio) uniform; it fits with probability P, computed by
  midpoint quadrature on an n x n grid. The box is the first fitting try (the
  try distribution conditioned on fitting) with probability 1 - (1 - P)^10,
  else the fallback. Given the height h, top ~ U(0, 1 - h).
  """
  area = scale[0] + (scale[1] - scale[0]) * (np.arange(n) + 0.5) / n
  log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * (np.arange(n) + 0.5) / n
  area, log_r = np.meshgrid(area, log_r)
  w, h = np.sqrt(area * np.exp(log_r)), np.sqrt(area * np.exp(-log_r))
  fits = (w <= 1) & (h <= 1)
  p_fallback = (1 - fits.mean()) ** CROP_TRIES
  fb_h, fb_w = _fallback_size(1.0, 1.0, ratio, lambda v: v)
  h, w = h[fits], w[fits]
  tried = [((1 - h) / 2, (1 - h) ** 2 / 3), ((1 - w) / 2, (1 - w) ** 2 / 3),
           (h, h ** 2), (w, w ** 2)]
  fallback = [(1 - fb_h) / 2, (1 - fb_w) / 2, fb_h, fb_w]
  mean, second = [], []
  for (first, sq), fb in zip(tried, fallback):
    mean.append((1 - p_fallback) * (first.mean() if fits.any() else 0.0) + p_fallback * fb)
    second.append((1 - p_fallback) * (sq.mean() if fits.any() else 0.0) + p_fallback * fb ** 2)
  return mean, second


@functools.lru_cache(maxsize=None)
def _encoding_stats(policy: Policy) -> tuple[np.ndarray, np.ndarray]:
  mean, second = _crop_moments(policy.crop_scale, policy.crop_ratio)

  def bernoulli(p):
    mean.append(p)
    second.append(p)

  def mixture(p, low, high, identity):
    m, s = _mixture_moments(p, low, high, identity)
    mean.append(m)
    second.append(s)

  bernoulli(policy.flip_p)
  bernoulli(policy.jitter_p)
  for step in range(4):  # A uniform permutation puts each op at each step w.p. 1/4.
    mean.append(policy.jitter_p * 1.5 + (1 - policy.jitter_p) * step)
    second.append(policy.jitter_p * 3.5 + (1 - policy.jitter_p) * step ** 2)
  for v in policy.jitter[:3]:
    mixture(policy.jitter_p, max(0.0, 1.0 - v), 1.0 + v, 1.0)
  mixture(policy.jitter_p, -policy.jitter[3], policy.jitter[3], 0.0)
  bernoulli(policy.grayscale_p)
  bernoulli(policy.blur_p)
  mixture(policy.blur_p, *policy.blur_sigma, 0.0)
  bernoulli(policy.solarize_p)
  mean, second = np.array(mean, np.float64), np.array(second, np.float64)
  std = np.sqrt(np.maximum(second - mean ** 2, 0.0))
  std = np.where(std > 1e-6, std, 1.0)
  return mean.astype(np.float32), std.astype(np.float32)


def _validate(policy: Policy):
  def check(ok, message):
    if not ok:
      raise ValueError(f"policy {policy.name!r}: {message}")

  for field in ("flip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p"):
    check(0.0 <= getattr(policy, field) <= 1.0, f"{field} must be in [0, 1], got {getattr(policy, field)}")
  for field, length in (("crop_scale", 2), ("crop_ratio", 2), ("jitter", 4), ("blur_sigma", 2)):
    check(len(getattr(policy, field)) == length, f"{field} needs {length} numbers, got {getattr(policy, field)}")
  check(0.0 < policy.crop_scale[0] <= policy.crop_scale[1], f"crop_scale must be 0 < lo <= hi, got {policy.crop_scale}")
  check(0.0 < policy.crop_ratio[0] <= policy.crop_ratio[1], f"crop_ratio must be 0 < lo <= hi, got {policy.crop_ratio}")
  check(min(policy.jitter) >= 0.0 and policy.jitter[3] <= 0.5, f"jitter strengths must be >= 0, hue <= 0.5, got {policy.jitter}")
  check(0.0 < policy.blur_sigma[0] <= policy.blur_sigma[1], f"blur_sigma must be 0 < lo <= hi, got {policy.blur_sigma}")


def _simclr_jitter(strength):
  """SimCLR's colour-jitter strength s: brightness, contrast, saturation 0.8 s, hue 0.2 s."""
  return (0.8 * strength, 0.8 * strength, 0.8 * strength, 0.2 * strength)


_BYOL = dict(crop_scale=(0.08, 1.0), jitter=(0.4, 0.4, 0.2, 0.1), jitter_p=0.8, grayscale_p=0.2)
_NAMED = {
    "simclr_cifar": Policy("simclr_cifar", crop_scale=(0.2, 1.0), jitter=_simclr_jitter(0.5), jitter_p=0.8,
                           grayscale_p=0.2),
    "simclr_imagenet": Policy("simclr_imagenet", crop_scale=(0.08, 1.0), jitter=_simclr_jitter(1.0),
                              jitter_p=0.8, grayscale_p=0.2, blur_p=0.5),
    "byol_view1": Policy("byol_view1", blur_p=1.0, solarize_p=0.0, **_BYOL),
    "byol_view2": Policy("byol_view2", blur_p=0.1, solarize_p=0.2, **_BYOL),
    "none": Policy("none", crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0),
}
_PAIRS = {"byol": ("byol_view1", "byol_view2")}
PAIR_NAMES = tuple(_PAIRS)
POLICY_NAMES = tuple(_NAMED) + PAIR_NAMES
CONFIG_KEYS = ("base", "name", "jitter_strength") + tuple(f.name for f in dataclasses.fields(Policy) if f.name != "name")


def get_policy(name_or_cfg: str | Mapping[str, Any]) -> Policy | tuple[Policy, Policy]:
  """A named policy, or one defined by a config; "byol" gives the (view1, view2) pair.

  A config (ConfigDict or dict) names a `base` policy (default "none") and
  overrides any `Policy` field; `jitter_strength` s sets SimCLR's jitter
  (0.8 s, 0.8 s, 0.8 s, 0.2 s). With base "byol" the overrides apply to both views.
  """
  if isinstance(name_or_cfg, str):
    if name_or_cfg in _PAIRS:
      return tuple(_NAMED[n] for n in _PAIRS[name_or_cfg])
    if name_or_cfg not in _NAMED:
      raise ValueError(f"unknown policy {name_or_cfg!r}; known: {', '.join(POLICY_NAMES)}")
    return _NAMED[name_or_cfg]
  cfg = dict(name_or_cfg.to_dict() if hasattr(name_or_cfg, "to_dict") else name_or_cfg)
  for key in cfg:
    if key not in CONFIG_KEYS:
      raise ValueError(f"unknown augmentation config key {key!r}; allowed: {', '.join(CONFIG_KEYS)}")
  base = get_policy(cfg.pop("base", "none"))
  name = cfg.pop("name", "custom")
  if "jitter_strength" in cfg:
    if "jitter" in cfg:
      raise ValueError("give either jitter or jitter_strength, not both")
    cfg["jitter"] = _simclr_jitter(cfg.pop("jitter_strength"))
  if isinstance(base, tuple):
    return tuple(dataclasses.replace(view, name=f"{name}_view{i + 1}", **cfg) for i, view in enumerate(base))
  return dataclasses.replace(base, name=name, **cfg)
