"""steerjax.augment.ops against independent NumPy/PIL versions of torchvision's definitions.

The references below are written from torchvision's source (v2 functional on
float tensors), not from steerjax's code: HSV by torchvision's sextant formulas,
resizing by PIL (whose antialiased bilinear filter torchvision's matches) and by
torch's `_upsample_bilinear2d_aa` index arithmetic, rotation through the
normalised affine grid and `grid_sample`.

Tolerances: colour ops 1e-4 (observed ~1e-6); resized crops on the pixel grid
2e-5 against both PIL and the torch formula; rotations 1e-5 (float32 trig).
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from steerjax.augment import ops

COLOUR_TOL = 1e-4
CROP_TOL = 2e-5
ROTATE_TOL = 1e-5

# Jitted once per shape: op-by-op dispatch would dominate the test time.
resized_crop = jax.jit(ops.resized_crop, static_argnums=2)
gaussian_blur = jax.jit(ops.gaussian_blur, static_argnums=2)
rotate = jax.jit(ops.rotate)


# ----------------------------------------------------------------- references

def np_gray(x):
  return 0.2989 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


def np_blend(x, other, factor):
  return np.clip(factor * x + (1 - factor) * other, 0, 1)


def np_brightness(x, b):
  return np.clip(b * x, 0, 1)


def np_contrast(x, c):
  return np_blend(x, np_gray(x).mean(), c)


def np_saturation(x, s):
  return np_blend(x, np_gray(x)[..., None], s)


def np_rgb2hsv(x):
  r, g, b = x[..., 0], x[..., 1], x[..., 2]
  maxc, minc = x.max(-1), x.min(-1)
  eqc = maxc == minc
  cr = maxc - minc
  s = cr / np.where(eqc, 1.0, maxc)
  div = np.where(eqc, 1.0, cr)
  rc, gc, bc = (maxc - r) / div, (maxc - g) / div, (maxc - b) / div
  hr = (maxc == r) * (bc - gc)
  hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
  hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
  h = np.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
  return h, s, maxc


def np_hsv2rgb(h, s, v):
  i = np.floor(h * 6.0)
  f = h * 6.0 - i
  i = i.astype(int) % 6
  p = np.clip(v * (1 - s), 0, 1)
  q = np.clip(v * (1 - s * f), 0, 1)
  t = np.clip(v * (1 - s * (1 - f)), 0, 1)
  table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
  out = np.zeros(h.shape + (3,))
  for k, rgb in enumerate(table):
    out[i == k] = np.stack(rgb, -1)[i == k]
  return out


def np_hue(x, delta):
  h, s, v = np_rgb2hsv(x)
  return np_hsv2rgb(np.mod(h + delta, 1.0), s, v)


NP_JITTER_OPS = (np_brightness, np_contrast, np_saturation, np_hue)


def np_color_jitter(x, factors, order):
  for op in order:
    x = NP_JITTER_OPS[op](x, factors[op])
  return x


def np_grayscale(x):
  return np.repeat(np_gray(x)[..., None], 3, -1)


def np_solarize(x, threshold=0.5):
  return np.where(x >= threshold, 1 - x, x)


def np_gaussian_blur(x, sigma, k):
  half = (k - 1) * 0.5
  pdf = np.exp(-0.5 * (np.linspace(-half, half, k) / sigma) ** 2)
  kernel = pdf / pdf.sum()
  pad = k // 2
  padded = np.pad(x, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
  windows = np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(0, 1))
  return np.einsum("hwcij,i,j->hwc", windows, kernel, kernel)


def pil_resized_crop(x, top, left, height, width, out_h, out_w):
  """Crop, then PIL's antialiased bilinear resize, one float ('F') channel at a time."""
  crop = x[top:top + height, left:left + width]
  return np.stack([np.asarray(Image.fromarray(crop[..., c].astype(np.float32), mode="F").resize(
      (out_w, out_h), Image.BILINEAR)) for c in range(3)], -1)


def torch_aa_weights(in_size, out_size):
  """torch `_upsample_bilinear2d_aa` weights [out, in] (align_corners=False)."""
  scale = in_size / out_size
  support = scale if scale >= 1.0 else 1.0
  invscale = 1.0 / scale if scale >= 1.0 else 1.0
  weights = np.zeros((out_size, in_size))
  for i in range(out_size):
    center = scale * (i + 0.5)
    xmin = max(int(center - support + 0.5), 0)
    xmax = min(int(center + support + 0.5), in_size)
    w = np.array([max(0.0, 1.0 - abs((j + xmin - center + 0.5) * invscale)) for j in range(xmax - xmin)])
    weights[i, xmin:xmax] = w / w.sum()
  return weights


def torch_resized_crop(x, top, left, height, width, out_h, out_w):
  crop = x[top:top + height, left:left + width]
  return np.einsum("oh,hwc,pw->opc", torch_aa_weights(height, out_h), crop, torch_aa_weights(width, out_w))


def np_rotate(x, angle):
  """torchvision rotate: inverse affine matrix, normalised grid, grid_sample(zeros)."""
  h, w = x.shape[:2]
  rot = np.radians(-angle)  # torchvision passes -angle to _get_inverse_affine_matrix.
  a, b, c, d = np.cos(rot), -np.sin(rot), np.sin(rot), np.cos(rot)
  inverse = np.array([[d, -b, 0.0], [-c, a, 0.0]])
  xs = np.linspace(-w * 0.5 + 0.5, w * 0.5 - 0.5, w)
  ys = np.linspace(-h * 0.5 + 0.5, h * 0.5 - 0.5, h)
  base = np.stack(np.broadcast_arrays(xs[None, :], ys[:, None], np.ones((h, w))), -1)
  grid = base @ (inverse.T / np.array([0.5 * w, 0.5 * h]))
  ix = ((grid[..., 0] + 1) * w - 1) / 2
  iy = ((grid[..., 1] + 1) * h - 1) / 2
  x0, y0 = np.floor(ix).astype(int), np.floor(iy).astype(int)
  out = np.zeros_like(x)
  for xi, yi in itertools.product((x0, x0 + 1), (y0, y0 + 1)):
    weight = (1 - np.abs(ix - xi)) * (1 - np.abs(iy - yi))
    valid = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    out += np.where(valid, weight, 0)[..., None] * x[np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)]
  return out


# ----------------------------------------------------------------- images

def _images():
  rng = np.random.default_rng(0)
  saturated = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 1], [1, 1, 1], [0, 0, 0]],
                       np.float32)
  return {
      "random": rng.uniform(size=(12, 10, 3)).astype(np.float32),
      "black": np.zeros((6, 6, 3), np.float32),
      "white": np.ones((6, 6, 3), np.float32),
      "saturated": np.tile(saturated[None], (2, 1, 1)),
      "quantised": (rng.integers(0, 256, size=(8, 8, 3)) / 255).astype(np.float32),
  }


IMAGES = _images()
COLOUR_CASES = [
    (jax.jit(ops.adjust_brightness), np_brightness, (0.0, 0.2, 1.0, 1.8)),
    (jax.jit(ops.adjust_contrast), np_contrast, (0.0, 0.2, 1.0, 1.8)),
    (jax.jit(ops.adjust_saturation), np_saturation, (0.0, 0.2, 1.0, 1.8)),
    (jax.jit(ops.adjust_hue), np_hue, (-0.5, -0.2, 0.0, 0.1, 0.5)),
]


@pytest.mark.parametrize("op, ref, factors", COLOUR_CASES, ids=["brightness", "contrast", "saturation", "hue"])
@pytest.mark.parametrize("name", list(IMAGES))
def test_colour_ops_match_torchvision(op, ref, factors, name):
  x = IMAGES[name]
  for factor in factors:
    np.testing.assert_allclose(op(x, factor), ref(x.astype(np.float64), factor), atol=COLOUR_TOL, rtol=0)


def test_colour_ops_vmap_over_traced_factors():
  x = IMAGES["random"]
  for op, ref, factors in COLOUR_CASES:
    batched = jax.jit(jax.vmap(op, in_axes=(None, 0)))(x, jnp.array(factors))
    for got, factor in zip(batched, factors):
      np.testing.assert_allclose(got, ref(x.astype(np.float64), factor), atol=COLOUR_TOL, rtol=0)


def test_color_jitter_every_order():
  x = IMAGES["random"]
  factors = np.array([1.3, 0.6, 1.5, 0.2], np.float32)
  orders = np.array(list(itertools.permutations(range(4))), np.int32)
  got = jax.jit(jax.vmap(ops.color_jitter, in_axes=(None, None, 0)))(x, factors, orders)
  for out, order in zip(got, orders):
    np.testing.assert_allclose(out, np_color_jitter(x.astype(np.float64), factors, order), atol=COLOUR_TOL, rtol=0)
  # The order matters, so recording it is necessary.
  assert np.abs(got[0] - got[-1]).max() > 1e-2


@pytest.mark.parametrize("name", list(IMAGES))
def test_grayscale_and_solarize(name):
  x = IMAGES[name]
  np.testing.assert_allclose(ops.grayscale(x, True), np_grayscale(x), atol=COLOUR_TOL, rtol=0)
  np.testing.assert_array_equal(ops.grayscale(x, False), x)
  for threshold in (0.5, 0.2):
    np.testing.assert_allclose(ops.solarize(x, True, threshold), np_solarize(x, threshold), atol=1e-7, rtol=0)
  np.testing.assert_array_equal(ops.solarize(x, False), x)
  # Pixels exactly at the threshold are inverted, as torchvision's `>=`.
  np.testing.assert_allclose(ops.solarize(jnp.full((1, 1, 3), 0.5), True), 0.5)
  np.testing.assert_allclose(ops.solarize(jnp.full((1, 1, 3), 0.75), True), 0.25)


@pytest.mark.parametrize("sigma, kernel_size", [(0.1, 3), (1.0, 3), (0.7, 5), (2.0, 7), (1.5, 23)])
def test_gaussian_blur_matches_torchvision(sigma, kernel_size):
  x = np.random.default_rng(1).uniform(size=(24, 20, 3)).astype(np.float32)
  np.testing.assert_allclose(gaussian_blur(x, sigma, kernel_size), np_gaussian_blur(x.astype(np.float64), sigma,
                                                                                         kernel_size),
                             atol=COLOUR_TOL, rtol=0)
  np.testing.assert_allclose(gaussian_blur(IMAGES["white"], sigma, 3), 1.0, atol=1e-6)


def test_gaussian_blur_traced_sigma_and_even_kernel():
  x = IMAGES["random"]
  sigmas = jnp.array([0.3, 1.0, 1.9])
  got = jax.jit(jax.vmap(ops.gaussian_blur, in_axes=(None, 0, None)), static_argnums=2)(x, sigmas, 5)
  for out, sigma in zip(got, np.asarray(sigmas)):
    np.testing.assert_allclose(out, np_gaussian_blur(x.astype(np.float64), sigma, 5), atol=COLOUR_TOL, rtol=0)
  with pytest.raises(ValueError, match="odd"):
    ops.gaussian_blur(x, 1.0, 4)
  with pytest.raises(ValueError, match="larger than"):
    ops.gaussian_blur(x[:4, :4], 1.0, 9)


def test_gaussian_blur_sigma_zero_is_exactly_the_image():
  """The policy's unapplied blur (sigma 0) must leave the pixels untouched, not nearly so."""
  x = IMAGES["random"]
  got = jax.jit(jax.vmap(ops.gaussian_blur, in_axes=(None, 0, None)), static_argnums=2)(x, jnp.array([0.0, 1.2]), 7)
  np.testing.assert_array_equal(got[0], x)
  np.testing.assert_allclose(got[1], np_gaussian_blur(x.astype(np.float64), 1.2, 7), atol=COLOUR_TOL, rtol=0)


def test_hflip():
  x = IMAGES["random"]
  np.testing.assert_array_equal(ops.hflip(x, True), x[:, ::-1])
  np.testing.assert_array_equal(ops.hflip(x, False), x)


CROPS = [  # (source h, w), (top, left, height, width) in pixels, output (h, w)
    ((32, 32), (0, 0, 32, 32), (32, 32)),     # identity
    ((32, 32), (3, 5, 20, 17), (32, 32)),     # upsample
    ((40, 36), (4, 2, 33, 30), (11, 9)),      # antialiased shrink
    ((64, 48), (0, 7, 64, 41), (24, 24)),     # touching borders, mixed
    ((20, 20), (9, 9, 1, 1), (5, 5)),         # one pixel
]


@pytest.mark.parametrize("source, box, out", CROPS)
def test_resized_crop_matches_torchvision(source, box, out):
  x = np.random.default_rng(2).uniform(size=source + (3,)).astype(np.float32)
  top, left, height, width = box
  fractions = np.array([top / source[0], left / source[1], height / source[0], width / source[1]], np.float32)
  got = np.asarray(resized_crop(x, fractions, out))
  assert got.shape == out + (3,)
  np.testing.assert_allclose(got, pil_resized_crop(x, *box, *out), atol=CROP_TOL, rtol=0)
  np.testing.assert_allclose(got, torch_resized_crop(x.astype(np.float64), *box, *out), atol=CROP_TOL, rtol=0)


def test_resized_crop_identity_vmap_and_flip_equivariance():
  x = np.random.default_rng(3).uniform(size=(16, 16, 3)).astype(np.float32)
  np.testing.assert_allclose(resized_crop(x, jnp.array([0.0, 0.0, 1.0, 1.0]), 16), x, atol=1e-6)
  boxes = jnp.array([[0.0, 0.0, 1.0, 1.0], [0.25, 0.125, 0.5, 0.75], [0.1, 0.33, 0.71, 0.5]])
  batched = jax.vmap(ops.resized_crop, in_axes=(None, 0, None))(x, boxes, 8)
  for got, box in zip(batched, boxes):
    np.testing.assert_allclose(got, resized_crop(x, box, 8), atol=1e-6)
    top, left, height, width = box
    mirrored = jnp.array([top, 1 - left - width, height, width])  # also off the pixel grid
    np.testing.assert_allclose(resized_crop(x[:, ::-1], mirrored, 8), got[:, ::-1], atol=1e-5)


@pytest.mark.parametrize("shape", [(9, 9), (10, 10), (12, 7)])
@pytest.mark.parametrize("angle", [0.0, 17.0, -45.0, 90.0, 200.0])
def test_rotate_matches_torchvision(shape, angle):
  x = np.random.default_rng(4).uniform(size=shape + (3,)).astype(np.float32)
  np.testing.assert_allclose(rotate(x, angle), np_rotate(x.astype(np.float64), angle), atol=ROTATE_TOL, rtol=0)


def test_rotate_quarter_turns_are_exact_permutations():
  x = np.random.default_rng(5).uniform(size=(8, 8, 3)).astype(np.float32)
  np.testing.assert_allclose(rotate(x, 0.0), x, atol=1e-7)
  np.testing.assert_allclose(rotate(x, 90.0), np.rot90(x, 1), atol=ROTATE_TOL)  # counter-clockwise
  np.testing.assert_allclose(rotate(x, -90.0), np.rot90(x, -1), atol=ROTATE_TOL)
  angles = jnp.array([0.0, 90.0, 180.0])
  batched = jax.jit(jax.vmap(ops.rotate, in_axes=(None, 0)))(x, angles)
  for k, got in enumerate(batched):
    np.testing.assert_allclose(got, np.rot90(x, k), atol=ROTATE_TOL)
