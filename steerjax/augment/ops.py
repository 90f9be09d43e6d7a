"""Parameterised image ops with torchvision's semantics, for use inside jit/vmap.

Every op is a pure function of one image (float32, HWC, values in [0, 1]) and
explicit parameters, which may be traced per example; only shapes and kernel
sizes are static. The pixels equal those of `torchvision.transforms.v2.functional`
on float tensors for the same parameters, because the seed papers' pipelines
used torchvision. dm-pix supplies the ops whose semantics are the same (hue,
solarize); the rest are jnp: dm-pix brightness is additive, its contrast uses
per-channel means, its saturation works in HSV where torchvision blends with
the rec601 grayscale image, and its blur pads with zeros.
"""

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np

# torchvision's colour-jitter op indices, as in ColorJitter's `fn_idx`.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0, 1, 2, 3

_HIGHEST = jax.lax.Precision.HIGHEST
LUMA = (0.2989, 0.587, 0.114)  # torchvision's rec601 grayscale weights


def _gray(image):
  """rec601 luma [H, W, 1] with torchvision's weights (0.2989, 0.587, 0.114).

  Written as a weighted sum rather than dm-pix's tensordot: XLA fuses it into
  the surrounding elementwise ops, where a K=3 dot runs as a separate, slow op.
  """
  return LUMA[0] * image[..., :1] + LUMA[1] * image[..., 1:2] + LUMA[2] * image[..., 2:]


def _gray_mean(image):
  """Mean of the rec601 luma, as one reduction of image * weights.

  Equal to jnp.mean(_gray(image)) up to summation order; XLA:CPU reduces the fused
  three-channel luma [H, W, 1] about 5x slower than the whole weighted image.
  """
  height, width = image.shape[:2]
  return jnp.sum(image * jnp.array(LUMA)) / (height * width)


def _blend(image, other, factor):
  """torchvision's `_blend`: clip(factor * image + (1 - factor) * other)."""
  return jnp.clip(factor * image + (1.0 - factor) * other, 0.0, 1.0)


def _size2(size):
  return (size, size) if isinstance(size, int) else tuple(size)


def _crop_resize_weights(in_size, out_size, start, length):
  """[out_size, in_size] resampling matrix for one axis of `resized_crop`.

  Triangle (bilinear) filter, widened by the shrink factor when shrinking
  (antialias), as torch's `_upsample_bilinear2d_aa`. torchvision crops before it
  resizes, so the filter is renormalised over the pixels inside the box (those
  whose centre lies in [start, start + length)) and never sees pixels outside it.
  """
  scale = length / out_size
  centres = start + (jnp.arange(out_size) + 0.5) * scale - 0.5
  pixels = jnp.arange(in_size)
  weights = jnp.maximum(0.0, 1.0 - jnp.abs(centres[:, None] - pixels) / jnp.maximum(scale, 1.0))
  inside = (pixels + 0.5 >= start) & (pixels + 0.5 < start + length)
  weights = jnp.where(inside, weights, 0.0)
  # Row sums as a product with ones, not a reduction: XLA:CPU fuses a reduction with the
  # resampling product that consumes it and runs the pair ~3x slower than the product alone.
  return weights / (weights @ jnp.ones(in_size))[:, None]


def resized_crop(image, box, size):
  """Crops box = (top, left, height, width), fractions of the source, and resizes.

  Equals torchvision's `resized_crop(..., BILINEAR, antialias=True)` for boxes on
  the pixel grid; a box must cover at least one pixel. Two dense matmuls with
  fixed shapes, so traced boxes jit and vmap.
  """
  in_h, in_w = image.shape[:2]
  out_h, out_w = _size2(size)
  box = jnp.asarray(box, jnp.float32)
  rows = _crop_resize_weights(in_h, out_h, box[0] * in_h, box[2] * in_h)
  cols = _crop_resize_weights(in_w, out_w, box[1] * in_w, box[3] * in_w)
  out = jnp.einsum("oh,hwc->owc", rows, image, precision=_HIGHEST)
  return jnp.einsum("pw,owc->opc", cols, out, precision=_HIGHEST)


def hflip(image, flag):
  """Mirrors the columns where `flag` is true."""
  return jnp.where(flag, image[:, ::-1], image)


def adjust_brightness(image, factor):
  """clip(factor * image): multiplicative, unlike dm-pix's additive version."""
  return jnp.clip(factor * image, 0.0, 1.0)


def adjust_contrast(image, factor):
  """Blends with the mean of the whole rec601 grayscale image."""
  return _blend(image, _gray_mean(image), factor)


def adjust_saturation(image, factor):
  """Blends with the rec601 grayscale image."""
  return _blend(image, _gray(image), factor)


def adjust_hue(image, delta):
  """Shifts hue by `delta` turns in HSV (dm-pix's conversion equals torchvision's)."""
  return pix.adjust_hue(image, delta)


def color_jitter(image, factors, order):
  """torchvision's ColorJitter for given factors and op order.

  factors = (brightness, contrast, saturation, hue delta); order is a
  permutation of (BRIGHTNESS, CONTRAST, SATURATION, HUE), the ops in the order
  applied. Blends (factor 1 where inactive) for the steps before the hue shift,
  the hue shift, then blends for the steps after it: the costly HSV round trip
  runs once, not once per possible position.
  """
  order = jnp.asarray(order)
  hue_step = jnp.argmax(order == HUE)

  def blends(planes, steps, active):
    # On separate R, G, B planes every op is elementwise at one index, so XLA fuses the
    # chain without recomputing each step once per channel that the next step's luma reads
    # (slices of an [H, W, 3] image made the fused chain cost grow 3x per step).
    for step in steps:
      op = order[step]
      factor = jnp.where(active(step), factors[jnp.minimum(op, SATURATION)], 1.0)
      gray = sum(w * p for w, p in zip(LUMA, planes))
      other = jnp.where(op == CONTRAST, jnp.mean(gray), jnp.where(op == SATURATION, gray, 0.0))
      planes = tuple(jnp.clip(factor * p + (1.0 - factor) * other, 0.0, 1.0) for p in planes)
    return planes

  # Steps 0-2 can precede the hue shift, steps 1-3 follow it.
  planes = blends(tuple(image[..., c] for c in range(3)), range(3), lambda step: step < hue_step)
  image = adjust_hue(jnp.stack(planes, axis=-1), factors[HUE])
  planes = blends(tuple(image[..., c] for c in range(3)), range(1, 4), lambda step: step > hue_step)
  return jnp.stack(planes, axis=-1)


def grayscale(image, flag):
  """rec601 luma replicated to three channels where `flag` is true."""
  return jnp.where(flag, jnp.broadcast_to(_gray(image), image.shape), image)


def _blur_matrix(n: int, sigma, radius: int):
  """[n, n] matrix of one axis of a Gaussian blur with reflect padding (no edge repeat).

  Output pixel i takes input j with the taps of the offsets that reach j: j - i directly,
  and -i - j (j >= 1) or 2(n - 1) - i - j (j <= n - 2) reflected at the two edges.
  sigma <= 0 gives the identity: the unapplied blur carries sigma 0.
  """
  i, j = np.arange(n)[:, None], np.arange(n)[None, :]
  offsets = [(j - i, True), (-i - j, j >= 1), (2 * (n - 1) - i - j, j <= n - 2)]
  safe_sigma = jnp.where(sigma > 0, sigma, 1.0)
  tap = lambda o: jnp.where(sigma > 0, jnp.exp(-0.5 * (o / safe_sigma) ** 2), o == 0)
  norm = sum(tap(o) for o in range(-radius, radius + 1))
  return sum(jnp.where(valid & (np.abs(o) <= radius), tap(o), 0.0) for o, valid in offsets) / norm


def gaussian_blur(image, sigma, kernel_size: int):
  """Separable Gaussian blur with reflect padding, as torchvision's.

  Kernel taps at integer offsets -(k-1)/2 .. (k-1)/2, exp(-x^2 / 2 sigma^2),
  normalised; sigma <= 0 leaves the image as it is (exactly). `kernel_size` is static
  and odd; `sigma` may be traced. Each axis is one [n, n] matrix product (padding folded
  into the matrix), as `resized_crop`: dense products run near the CPU's peak where k
  shifted multiply-adds per axis were memory-bound (the 224-px SimCLR augmentation ran
  1.7x faster per CPU-second with this change), and a vmapped dm-pix convolution over
  per-example kernels becomes a slow grouped convolution.
  """
  if kernel_size % 2 != 1:
    raise ValueError(f"kernel_size must be odd, got {kernel_size}")
  height, width = image.shape[:2]
  if kernel_size // 2 >= min(height, width):
    raise ValueError(f"kernel_size {kernel_size} needs an image larger than {kernel_size // 2} pixels")
  rows = _blur_matrix(height, sigma, kernel_size // 2)
  cols = _blur_matrix(width, sigma, kernel_size // 2)
  out = jnp.einsum("oh,hwc->owc", rows, image, precision=_HIGHEST)
  return jnp.einsum("pw,owc->opc", cols, out, precision=_HIGHEST)


def solarize(image, flag, threshold=0.5):
  """Inverts pixels >= threshold where `flag` is true."""
  return jnp.where(flag, pix.solarize(image, threshold), image)


def rotate(image, angle):
  """Rotates by `angle` degrees counter-clockwise about the image centre.

  torchvision's `rotate(..., BILINEAR, expand=False, fill=None)`: bilinear
  sampling (grid_sample, align_corners=False) where neighbours outside the image
  count as 0. dm-pix's constant mode zeroes a whole sample once any neighbour is
  outside, so this is written out.
  """
  height, width = image.shape[:2]
  theta = jnp.deg2rad(angle)
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  y, x = jnp.meshgrid(jnp.arange(height) - (height - 1) / 2, jnp.arange(width) - (width - 1) / 2, indexing="ij")
  # Inverse map of a counter-clockwise rotation in display coordinates (y down).
  src_x = cos * x - sin * y + (width - 1) / 2
  src_y = sin * x + cos * y + (height - 1) / 2
  x0, y0 = jnp.floor(src_x), jnp.floor(src_y)
  out = jnp.zeros_like(image)
  for dy in (0, 1):
    for dx in (0, 1):
      xi, yi = x0 + dx, y0 + dy
      weight = (1 - jnp.abs(src_x - xi)) * (1 - jnp.abs(src_y - yi))
      valid = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
      pixel = image[jnp.clip(yi, 0, height - 1).astype(jnp.int32), jnp.clip(xi, 0, width - 1).astype(jnp.int32)]
      out = out + jnp.where(valid, weight, 0.0)[..., None] * pixel
  return out
