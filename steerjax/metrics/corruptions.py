"""The ImageNet-C corruptions (Hendrycks & Dietterich, ICLR 2019), equal to `imagecorruptions`.

The reference users cite is the `imagecorruptions` package (1.1.2), ImageNet-C's code made to work
on any image size. It no longer imports on today's stack (it needs `pkg_resources`, `np.float_`
and scikit-image's removed `multichannel=`), draws from NumPy's global random state, and pulls
OpenCV and scikit-image. So steerjax re-implements its 15 corruptions (plus 3 of its 4 extra ones)
in NumPy, SciPy and Pillow, operation for operation, and `tests/test_corruptions.py` checks each
against the package (installed by `pip install -e '.[corruptions]'`): all are bit-identical
except the two whose OpenCV calls are re-implemented here, which may differ by one grey level on
a few pixels (~0.01%: defocus blur's filter2D, which sums in another order, and frost's bicubic
resize of its texture).

As in the package: the severity constants are ImageNet-C's (set for 224 px) whatever the image
size; the float result is truncated to uint8 (`np.uint8`, not rounded); frost picks one of the
first 5 of its 6 textures (ImageNet-C's `randint(5)`), shipped in `frost/` (Apache-2.0, from
ImageNet-C via imagecorruptions); glass blur copies a neighbour's pixel rather than swapping
(ImageNet-C's NumPy-view aliasing, kept so numbers stay comparable). Unlike the package, images
smaller than 32 px are accepted (pixelate keeps at least 1 px), and each image draws from its own
`image_seed(seed, name, severity, index)`, so a split corrupted in chunks (passing each chunk's
example indices) equals the split corrupted at once.
Not offered: `spatter` (its OpenCV Canny / distance-transform chain has no exact SciPy equivalent).
"""

import functools
import io
import math
import os
import zlib

import numpy as np
from PIL import Image
from scipy import ndimage

# The 15 corruptions of the benchmark, in ImageNet-C's order (noise, blur, weather, digital).
CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
               "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
               "elastic_transform", "pixelate", "jpeg_compression")
# ImageNet-C's held-out "validation" corruptions (not in mCE), except spatter.
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "saturate")

_FROST_DIR = os.path.join(os.path.dirname(__file__), "frost")
_FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")


def image_seed(seed: int, name: str, severity: int, index: int) -> int:
  """The 32-bit seed of image `index`'s random draws (a `np.random.seed` for the reference)."""
  return int(np.random.SeedSequence([seed, zlib.crc32(name.encode()), severity, index])
             .generate_state(1)[0])


# --- shared operations ------------------------------------------------------------------------


def _gaussian(x: np.ndarray, sigma, mode: str = "nearest", truncate: float = 4.0) -> np.ndarray:
  """scikit-image's `filters.gaussian`: channels (last axis of a 3-D image) are not mixed."""
  if x.ndim == 3 and np.ndim(sigma) == 0:
    sigma = (sigma, sigma, 0)
  return ndimage.gaussian_filter(x, sigma, mode=mode, truncate=truncate)


def _clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
  """Central 1/factor crop zoomed back by `factor` (bilinear): at least the input's size."""
  h, w = (int(np.ceil(s / float(factor))) for s in x.shape[:2])
  top, left = (x.shape[0] - h) // 2, (x.shape[1] - w) // 2
  return ndimage.zoom(x[top:top + h, left:left + w], (factor, factor, 1), order=1)


def _motion_blur(x: np.ndarray, radius: int, sigma: float, angle: float) -> np.ndarray:
  """Half-Gaussian weighted sum of copies shifted along `angle` (edges replicated)."""
  width = radius * 2 + 1
  kernel = np.exp(-np.arange(width) ** 2 / (2 * sigma ** 2)) / (np.sqrt(2 * np.pi) * sigma)
  kernel = kernel / np.sum(kernel)
  point = (width * np.sin(np.deg2rad(angle)), width * np.cos(np.deg2rad(angle)))
  hypot = math.hypot(*point)
  blurred = np.zeros_like(x, dtype=np.float32)
  rows, cols = np.arange(x.shape[0]), np.arange(x.shape[1])
  for i in range(width):
    dy = -math.ceil(i * point[0] / hypot - 0.5)
    dx = -math.ceil(i * point[1] / hypot - 0.5)
    if abs(dy) >= x.shape[0] or abs(dx) >= x.shape[1]:
      break  # the motion left the image
    shifted = x[np.clip(rows - dy, 0, x.shape[0] - 1)][:, np.clip(cols - dx, 0, x.shape[1] - 1)]
    blurred = blurred + kernel[i] * shifted
  return blurred


def _rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
  """scikit-image's `rgb2hsv`, operation for operation (its truncation points must match)."""
  out = np.empty_like(rgb)
  v = rgb.max(-1)
  delta = np.ptp(rgb, axis=-1)
  with np.errstate(invalid="ignore", divide="ignore"):
    s = delta / v
    s[delta == 0.0] = 0.0
    for channel, offset in enumerate((0.0, 2.0, 4.0)):
      idx = rgb[..., channel] == v
      a, b = rgb[idx, (channel + 1) % 3], rgb[idx, (channel + 2) % 3]
      out[idx, 0] = (a - b) / delta[idx] if channel == 0 else offset + (a - b) / delta[idx]
    h = (out[..., 0] / 6.0) % 1.0
  h[delta == 0.0] = 0.0
  out[..., 0], out[..., 1], out[..., 2] = h, s, v
  out[np.isnan(out)] = 0
  return out


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
  """scikit-image's `hsv2rgb`, operation for operation."""
  hi = np.floor(hsv[..., 0] * 6)
  f = hsv[..., 0] * 6 - hi
  v, s = hsv[..., 2], hsv[..., 1]
  p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
  hi = np.stack([hi] * 3, axis=-1).astype(np.uint8) % 6
  return np.choose(hi, np.stack([np.stack(c, axis=-1) for c in
                                 ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))]))


def _cubic_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
  """OpenCV's INTER_CUBIC (A = -0.75, pixel centres aligned, edges replicated) taps and weights."""
  fx = ((np.arange(dst) + 0.5) * (src / dst) - 0.5).astype(np.float32)
  sx = np.floor(fx).astype(np.int64)
  f = (fx - sx.astype(np.float32)).astype(np.float64)
  a = -0.75
  c0 = ((a * (f + 1) - 5 * a) * (f + 1) + 8 * a) * (f + 1) - 4 * a
  c1 = ((a + 2) * f - (a + 3)) * f * f + 1
  c2 = ((a + 2) * (1 - f) - (a + 3)) * (1 - f) * (1 - f) + 1
  return np.clip(sx[:, None] + np.arange(-1, 3), 0, src - 1), np.stack([c0, c1, c2, 1 - c0 - c1 - c2], -1)


def _resize_cubic(img: np.ndarray, width: int, height: int) -> np.ndarray:
  """`cv2.resize(img, (width, height), interpolation=cv2.INTER_CUBIC)` for uint8 as OpenCV 5
  computes it (float weights, one rounding), to within one grey level on ~0.02% of pixels."""
  xi, xw = _cubic_taps(img.shape[1], width)
  yi, yw = _cubic_taps(img.shape[0], height)
  rows = np.einsum("hwkc,wk->hwc", img.astype(np.float64)[:, xi], xw)
  return np.clip(np.rint(np.einsum("hkwc,hk->hwc", rows[yi], yw)), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=None)
def _frost_texture(index: int, height: int, width: int) -> np.ndarray:
  """Frost texture `index`, rescaled (x1.1 beyond what covers the image) as the package does."""
  frost = np.asarray(Image.open(os.path.join(_FROST_DIR, _FROST_FILES[index])).convert("RGB"))
  fh, fw = frost.shape[:2]
  scale = max([1.0] + [s / f for s, f in ((height, fh), (width, fw)) if f < s]) * 1.1
  return _resize_cubic(frost, int(np.ceil(fw * scale)), int(np.ceil(fh * scale)))


def _plasma_fractal(rs: np.random.RandomState, mapsize: int, decay: float) -> np.ndarray:
  """Diamond-square heightmap in [0, 1], side `mapsize` (a power of two)."""
  m = np.zeros((mapsize, mapsize))
  step, wibble = mapsize, 100.0
  while step >= 2:
    half = step // 2
    corners = m[0:mapsize:step, 0:mapsize:step]
    square = corners + np.roll(corners, -1, axis=0)
    square += np.roll(square, -1, axis=1)
    m[half:mapsize:step, half:mapsize:step] = square / 4 + wibble * rs.uniform(-wibble, wibble, square.shape)
    centres, corners = m[half:mapsize:step, half:mapsize:step], m[0:mapsize:step, 0:mapsize:step]
    across = centres + np.roll(centres, 1, axis=0) + corners + np.roll(corners, -1, axis=1)
    m[0:mapsize:step, half:mapsize:step] = across / 4 + wibble * rs.uniform(-wibble, wibble, across.shape)
    down = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=0)
    m[half:mapsize:step, 0:mapsize:step] = down / 4 + wibble * rs.uniform(-wibble, wibble, down.shape)
    step //= 2
    wibble /= decay
  m -= m.min()
  return m / m.max()


# --- the corruptions: uint8 [H, W, 3] image, RandomState -> float [0, 255] or uint8 -----------


def _gaussian_noise(img, rs, c):
  x = img / 255.
  return np.clip(x + rs.normal(size=x.shape, scale=c), 0, 1) * 255


def _shot_noise(img, rs, c):
  return np.clip(rs.poisson(img / 255. * c) / float(c), 0, 1) * 255


def _impulse_noise(img, rng, c):
  """scikit-image's salt-and-pepper (`random_noise(mode='s&p')`), drawn from a Generator."""
  x = img / 255.
  flipped, salted = rng.random(x.shape) <= c, rng.random(x.shape) <= 0.5
  x[flipped & salted], x[flipped & ~salted] = 1, 0
  return np.clip(x, 0, 1) * 255


def _speckle_noise(img, rs, c):
  x = img / 255.
  return np.clip(x + x * rs.normal(size=x.shape, scale=c), 0, 1) * 255


def _gaussian_blur(img, rs, c):
  return np.clip(_gaussian(img / 255., c), 0, 1) * 255


def _glass_blur(img, rs, c):
  sigma, delta, iterations = c
  x = np.uint8(_gaussian(img / 255., sigma) * 255)
  h, w = x.shape[:2]
  # Each visited pixel takes a random neighbour's value, in ImageNet-C's scan order; tracked as
  # a map of source pixels (plain ints, so the sequential loop stays cheap).
  visits = [(i, j) for i in range(h - delta, delta, -1) for j in range(w - delta, delta, -1)]
  source = list(range(h * w))
  for _ in range(iterations):
    offsets = rs.randint(-delta, delta, size=(len(visits), 2)).tolist()
    for (i, j), (dx, dy) in zip(visits, offsets):
      source[i * w + j] = source[(i + dy) * w + j + dx]
  x = x.reshape(h * w, -1)[source].reshape(x.shape)
  return np.clip(_gaussian(x / 255., sigma), 0, 1) * 255


def _defocus_blur(img, rs, c):
  radius, alias_blur = c
  span = np.arange(-8, 9) if radius <= 8 else np.arange(-radius, radius + 1)
  ky, kx = np.meshgrid(span, span)
  disk = np.array(kx ** 2 + ky ** 2 <= radius ** 2, dtype=np.float32)
  disk /= np.sum(disk)
  taps = np.arange(3 if radius <= 8 else 5) - (1 if radius <= 8 else 2)
  g = np.exp(-0.5 * taps ** 2 / alias_blur ** 2)
  g = (g / g.sum()).astype(np.float32)  # OpenCV's GaussianBlur (reflect-101 borders) antialiases
  for axis in (0, 1):
    disk = ndimage.correlate1d(disk, g, axis=axis, mode="mirror")
  kernel = disk.astype(np.float64)
  x = img / 255.
  out = np.stack([ndimage.correlate(x[..., d], kernel, mode="mirror") for d in range(3)], -1)
  return np.clip(out, 0, 1) * 255


def _motion_blur_image(img, rs, c):
  return np.clip(_motion_blur(img, c[0], c[1], rs.uniform(-45, 45)), 0, 255)


def _zoom_blur(img, rs, c):
  x = (img / 255.).astype(np.float32)
  out = np.zeros_like(x)
  for factor in c:
    layer = _clipped_zoom(x, factor)[:x.shape[0], :x.shape[1]]
    out[:layer.shape[0], :layer.shape[1]] += layer
  return np.clip((x + out) / (len(c) + 1), 0, 1) * 255


def _snow(img, rs, c):
  x = np.array(img, dtype=np.float32) / 255.
  layer = rs.normal(size=x.shape[:2], loc=c[0], scale=c[1])
  layer = _clipped_zoom(layer[..., None], c[2])
  layer[layer < c[3]] = 0
  layer = _motion_blur(np.clip(layer.squeeze(-1), 0, 1), c[4], c[5], rs.uniform(-135, -45))
  layer = (np.round(layer * 255).astype(np.uint8) / 255.)[:x.shape[0], :x.shape[1], None]
  gray = (x[..., 0] * np.float32(0.299) + x[..., 1] * np.float32(0.587)
          + x[..., 2] * np.float32(0.114))[..., None]
  x = c[6] * x + (1 - c[6]) * np.maximum(x, gray * 1.5 + 0.5)
  return np.clip(x + layer + np.rot90(layer, k=2), 0, 1) * 255


def _frost(img, rs, c):
  h, w = img.shape[:2]
  frost = _frost_texture(rs.randint(5), h, w)
  top, left = rs.randint(0, frost.shape[0] - h), rs.randint(0, frost.shape[1] - w)
  return np.clip(c[0] * img + c[1] * frost[top:top + h, left:left + w], 0, 255)


def _fog(img, rs, c):
  h, w = img.shape[:2]
  x = img / 255.
  peak = x.max()
  size = 1 << (max(img.shape) - 1).bit_length()
  x += c[0] * _plasma_fractal(rs, size, c[1])[:h, :w][..., None]
  return np.clip(x * peak / (peak + c[0]), 0, 1) * 255


def _brightness(img, rs, c):
  x = _rgb_to_hsv(img / 255.)
  x[..., 2] = np.clip(x[..., 2] + c, 0, 1)
  return np.clip(_hsv_to_rgb(x), 0, 1) * 255


def _saturate(img, rs, c):
  x = _rgb_to_hsv(img / 255.)
  x[..., 1] = np.clip(x[..., 1] * c[0] + c[1], 0, 1)
  return np.clip(_hsv_to_rgb(x), 0, 1) * 255


def _contrast(img, rs, c):
  x = img / 255.
  means = np.mean(x, axis=(0, 1), keepdims=True)
  return np.clip((x - means) * c + means, 0, 1) * 255


def _elastic_transform(img, rs, alpha):
  x = np.array(img, dtype=np.float32) / 255.
  shape = x.shape
  sigma = np.array(shape[:2]) * 0.01
  limit = shape[0] * 0.005
  dx, dy = ((_gaussian(rs.uniform(-limit, limit, size=shape[:2]), sigma, "reflect", 3) * alpha)
            .astype(np.float32)[..., None] for _ in range(2))
  cols, rows, chans = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
  coords = [np.reshape(a, (-1, 1)) for a in (rows + dy, cols + dx, chans)]
  return np.clip(ndimage.map_coordinates(x, coords, order=1, mode="reflect").reshape(shape), 0, 1) * 255


def _pixelate(img, rs, c):
  h, w = img.shape[:2]
  small = Image.fromarray(img).resize((max(1, int(w * c)), max(1, int(h * c))), Image.BOX)
  return np.asarray(small.resize((w, h), Image.NEAREST))


def _jpeg_compression(img, rs, c):
  buffer = io.BytesIO()
  Image.fromarray(img).save(buffer, "JPEG", quality=c)
  return np.asarray(Image.open(buffer))


# name: (function, its 5 severities' constants), constants as in ImageNet-C / imagecorruptions.
_TABLE = {
    "gaussian_noise": (_gaussian_noise, (.08, .12, .18, .26, .38)),
    "shot_noise": (_shot_noise, (60, 25, 12, 5, 3)),
    "impulse_noise": (_impulse_noise, (.03, .06, .09, .17, .27)),
    "defocus_blur": (_defocus_blur, ((3, .1), (4, .5), (6, .5), (8, .5), (10, .5))),
    "glass_blur": (_glass_blur, ((.7, 1, 2), (.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))),
    "motion_blur": (_motion_blur_image, ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))),
    "zoom_blur": (_zoom_blur, (np.arange(1, 1.11, .01), np.arange(1, 1.16, .01),
                               np.arange(1, 1.21, .02), np.arange(1, 1.26, .02),
                               np.arange(1, 1.31, .03))),
    "snow": (_snow, ((.1, .3, 3, .5, 10, 4, .8), (.2, .3, 2, .5, 12, 4, .7),
                     (.55, .3, 4, .9, 12, 8, .7), (.55, .3, 4.5, .85, 12, 8, .65),
                     (.55, .3, 2.5, .85, 12, 12, .55))),
    "frost": (_frost, ((1, .4), (.8, .6), (.7, .7), (.65, .7), (.6, .75))),
    "fog": (_fog, ((1.5, 2), (2., 2), (2.5, 1.7), (2.5, 1.5), (3., 1.4))),
    "brightness": (_brightness, (.1, .2, .3, .4, .5)),
    "contrast": (_contrast, (.4, .3, .2, .1, .05)),
    "elastic_transform": (_elastic_transform, tuple(250 * a for a in (.05, .065, .085, .1, .12))),
    "pixelate": (_pixelate, (.6, .5, .4, .3, .25)),
    "jpeg_compression": (_jpeg_compression, (25, 18, 15, 10, 7)),
    "speckle_noise": (_speckle_noise, (.15, .2, .35, .45, .6)),
    "gaussian_blur": (_gaussian_blur, (1, 2, 3, 4, 6)),
    "saturate": (_saturate, ((.3, 0), (.1, 0), (2, 0), (5, .1), (20, .2))),
}
ALL = CORRUPTIONS + EXTRA_CORRUPTIONS


def corrupt(images, name: str, severity: int, seed: int = 0, indices=None) -> np.ndarray:
  """Applies corruption `name` at `severity` (1..5) to images [N, H, W, 3].

  Args:
    images: uint8 in [0, 255], or float in [0, 1] (rounded to uint8 first: the benchmark is
      defined on 8-bit images).
    name: one of CORRUPTIONS or EXTRA_CORRUPTIONS.
    severity: 1 (mild) .. 5 (strong).
    seed: with (name, severity, image index) it seeds each image's draws (`image_seed`).
    indices: the images' example indices (default 0..N-1), for corrupting a split in chunks.

  Returns:
    The corrupted images, same shape; uint8 for uint8 input, float32 in [0, 1] for float input.
  """
  if name not in _TABLE:
    raise ValueError(f"unknown corruption {name!r}; use one of {', '.join(ALL)}")
  if not 1 <= severity <= 5:
    raise ValueError(f"severity must be in 1..5, got {severity}")
  images = np.asarray(images)
  is_uint8 = images.dtype == np.uint8
  x = images if is_uint8 else np.round(np.clip(images, 0, 1) * 255).astype(np.uint8)
  fn, constants = _TABLE[name]
  # impulse noise is scikit-image's, which draws from a Generator; the rest from RandomState.
  rng = np.random.default_rng if name == "impulse_noise" else np.random.RandomState
  indices = range(len(x)) if indices is None else indices
  out = np.stack([np.uint8(fn(img, rng(image_seed(seed, name, severity, int(i))), constants[severity - 1]))
                  for i, img in zip(indices, x, strict=True)]) if len(x) else x.copy()
  return out if is_uint8 else out.astype(np.float32) / 255
