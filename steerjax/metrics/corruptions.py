"""ImageNet-C-style corruptions for small images, in NumPy (+ Pillow for JPEG).

Hendrycks & Dietterich (ICLR 2019) define 15 corruptions at 5 severities. The
constants below are those of their CIFAR-10-C script (`make_cifar_c.py`, for
32x32 images); lengths in pixels (blur sigma) are multiplied by side/32 so a
64-px image gets the same relative blur. Fog and elastic are not included.

| name           | severity 1..5 constants          | operation                                   |
|----------------|----------------------------------|---------------------------------------------|
| gaussian_noise | std .04 .06 .08 .09 .10          | x + N(0, std^2)                              |
| shot_noise     | photons 500 250 100 75 50        | Poisson(x * c) / c                          |
| impulse_noise  | amount .01 .02 .03 .05 .07       | salt-and-pepper on that fraction of values  |
| gaussian_blur  | sigma .4 .6 .7 .8 1 (x side/32)  | Gaussian blur, reflect padding (defocus-like) |
| contrast       | c .75 .5 .4 .3 .15               | (x - mean) * c + mean, mean per image+channel |
| brightness     | +.05 .1 .15 .2 .3                | HSV value + c                               |
| saturate       | (.3,0) (.1,0) (1.5,0) (2,.1) (2.5,.2) | HSV saturation * a + b                 |
| jpeg           | quality 80 65 58 50 40           | JPEG round trip (Pillow)                    |
| pixelate       | factor .95 .9 .85 .75 .65        | box-downsample to side*c, box-upsample back |

Every result is clipped to [0, 1]; uint8 inputs come back as uint8.
"""

import io

import numpy as np
from matplotlib import colors
from PIL import Image

_CONSTANTS = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "saturate": ((0.3, 0.0), (0.1, 0.0), (1.5, 0.0), (2.0, 0.1), (2.5, 0.2)),
    "jpeg": (80, 65, 58, 50, 40),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
}
CORRUPTIONS = tuple(_CONSTANTS)


def _gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
  radius = max(1, int(np.ceil(3 * sigma)))
  taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
  taps /= taps.sum()
  for axis in (1, 2):
    pad = [(0, 0)] * 4
    pad[axis] = (radius, radius)
    padded = np.pad(x, pad, mode="reflect")
    size = x.shape[axis]
    x = sum(w * np.take(padded, np.arange(i, i + size), axis=axis) for i, w in enumerate(taps))
  return x


def _per_image(x: np.ndarray, fn) -> np.ndarray:
  return np.stack([fn(img) for img in x])


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
  buffer = io.BytesIO()
  Image.fromarray(np.round(img * 255).astype(np.uint8)).save(buffer, "JPEG", quality=quality)
  return np.asarray(Image.open(buffer), np.float64) / 255


def _pixelate(img: np.ndarray, factor: float) -> np.ndarray:
  pil = Image.fromarray(np.round(img * 255).astype(np.uint8))
  w, h = pil.size
  small = pil.resize((max(1, int(w * factor)), max(1, int(h * factor))), Image.BOX)
  return np.asarray(small.resize((w, h), Image.BOX), np.float64) / 255


def corrupt(images, name: str, severity: int, seed: int = 0) -> np.ndarray:
  """Applies corruption `name` at `severity` (1..5) to images [N, H, W, 3].

  Args:
    images: uint8 in [0, 255] or float in [0, 1].
    name: one of CORRUPTIONS.
    severity: 1 (mild) .. 5 (strong).
    seed: for the random corruptions (noises), so a benchmark is reproducible.

  Returns:
    The corrupted images, same shape and dtype convention as the input.
  """
  if name not in _CONSTANTS:
    raise ValueError(f"unknown corruption {name!r}; use one of {CORRUPTIONS}")
  if not 1 <= severity <= 5:
    raise ValueError(f"severity must be in 1..5, got {severity}")
  images = np.asarray(images)
  is_uint8 = images.dtype == np.uint8
  x = images.astype(np.float64) / 255 if is_uint8 else images.astype(np.float64)
  c = _CONSTANTS[name][severity - 1]
  rng = np.random.default_rng(seed)
  if name == "gaussian_noise":
    x = x + rng.normal(size=x.shape, scale=c)
  elif name == "shot_noise":
    x = rng.poisson(np.clip(x, 0, 1) * c) / c
  elif name == "impulse_noise":
    hit = rng.random(x.shape) < c
    x = np.where(hit, (rng.random(x.shape) < 0.5).astype(np.float64), x)
  elif name == "gaussian_blur":
    x = _gaussian_blur(x, c * x.shape[1] / 32)
  elif name == "contrast":
    mean = x.mean(axis=(1, 2), keepdims=True)
    x = (x - mean) * c + mean
  elif name in ("brightness", "saturate"):
    hsv = colors.rgb_to_hsv(np.clip(x, 0, 1))
    if name == "brightness":
      hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    else:
      hsv[..., 1] = np.clip(hsv[..., 1] * c[0] + c[1], 0, 1)
    x = colors.hsv_to_rgb(hsv)
  elif name == "jpeg":
    x = _per_image(np.clip(x, 0, 1), lambda img: _jpeg(img, c))
  elif name == "pixelate":
    x = _per_image(np.clip(x, 0, 1), lambda img: _pixelate(img, c))
  x = np.clip(x, 0, 1)
  return np.round(x * 255).astype(np.uint8) if is_uint8 else x.astype(np.float32)
