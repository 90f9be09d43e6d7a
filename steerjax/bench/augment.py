"""Augmentation throughput: steerjax's jitted batch path vs a host-side PIL/NumPy pipeline.

`python -m steerjax.bench augment [--repeats N]`

Both sides do the same work per image: sample the policy's parameters
(RandomResizedCrop, flip, colour jitter in a random order with p, grayscale,
blur, solarize), apply them, and return float32 [0, 1] views plus parameter
vectors. The host side is the PyTorch-era pipeline: one Python loop over
examples with PIL ops, as torchvision's transforms on PIL images (PIL
quantises to uint8 between ops and approximates the Gaussian, so pixels differ
slightly; the work is the same). Timings are medians over repeats, compile
excluded, the two alternating, and print the ratios of wall time and of CPU time.
"""

import argparse
import os

import jax
import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from steerjax import augment
from steerjax.bench import _timing

CASES = (  # (policy, batch, source side, output side)
    ("simclr_cifar", 256, 32, 32),
    ("simclr_imagenet", 64, 256, 224),
)


def _host_box(rng, policy, height, width):
  """torchvision RandomResizedCrop.get_params, with its Python loop."""
  for _ in range(10):
    area = height * width * rng.uniform(*policy.crop_scale)
    ratio = np.exp(rng.uniform(np.log(policy.crop_ratio[0]), np.log(policy.crop_ratio[1])))
    w, h = int(round(np.sqrt(area * ratio))), int(round(np.sqrt(area / ratio)))
    if 0 < w <= width and 0 < h <= height:
      return rng.integers(0, height - h + 1), rng.integers(0, width - w + 1), h, w
  return 0, 0, height, width  # square sources: the fallback is the whole image.


def _host_hue(image, delta):
  hsv = np.array(image.convert("HSV"))
  hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(delta * 255)) % 256
  return Image.fromarray(hsv, "HSV").convert("RGB")


def host_augment(policy, rng, images_uint8, size):
  """The per-example host pipeline: -> (views float32 [B, size, size, 3], raw vectors [B, 18])."""
  enhancers = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)
  kernel = policy.blur_kernel_size(size)
  views, vectors = [], []
  for array in images_uint8:
    image = Image.fromarray(array)
    top, left, h, w = _host_box(rng, policy, *array.shape[:2])
    image = image.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h))
    flip = rng.uniform() < policy.flip_p
    image = image.transpose(Image.FLIP_LEFT_RIGHT) if flip else image
    jitter = rng.uniform() < policy.jitter_p
    order, factors = np.arange(4), np.array([1.0, 1.0, 1.0, 0.0])
    if jitter:
      order = rng.permutation(4)
      factors = np.array([rng.uniform(max(0, 1 - v), 1 + v) for v in policy.jitter[:3]]
                         + [rng.uniform(-policy.jitter[3], policy.jitter[3])])
      for op in order:
        image = _host_hue(image, factors[3]) if op == 3 else enhancers[op](image).enhance(factors[op])
    gray = rng.uniform() < policy.grayscale_p
    image = image.convert("L").convert("RGB") if gray else image
    blur = rng.uniform() < policy.blur_p
    sigma = rng.uniform(*policy.blur_sigma) if blur else 0.0
    image = image.filter(ImageFilter.GaussianBlur(radius=sigma)) if blur and kernel > 1 else image
    solarize = rng.uniform() < policy.solarize_p
    image = ImageOps.solarize(image, 128) if solarize else image
    views.append(np.asarray(image, np.float32) / 255.0)
    box = np.array([top / array.shape[0], left / array.shape[1], h / array.shape[0], w / array.shape[1]])
    vectors.append(np.concatenate([box, [flip, jitter], order, factors, [gray, blur, sigma, solarize]]))
  return np.stack(views), np.stack(vectors).astype(np.float32)


def main(argv):
  parser = argparse.ArgumentParser(prog="python -m steerjax.bench augment", description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args(argv)
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} ({jax.default_backend()}), "
        f"{os.cpu_count()} CPU cores; median of {args.repeats}, compile excluded")
  print(f"{'case':<34} {'jax jit img/s':>14} {'host PIL img/s':>15} {'ratio':>7}   "
        f"{'jax img/CPU-s':>14} {'PIL img/CPU-s':>14} {'ratio':>7}")
  rng = np.random.default_rng(0)
  for name, batch, source, size in CASES:
    policy = augment.get_policy(name)
    images = rng.integers(0, 256, size=(batch, source, source, 3), dtype=np.uint8)
    on_device = jax.device_put(images)
    keys = iter(jax.random.split(jax.random.key(0), args.repeats + 1))
    run = lambda: jax.block_until_ready(augment.augment_batch(policy, next(keys), on_device, size))
    run()  # compile
    medians = _timing.alternating_medians({"jax": run, "host": lambda: host_augment(policy, rng, images, size)},
                                   args.repeats)
    (jax_wall, jax_cpu), (host_wall, host_cpu) = medians["jax"], medians["host"]
    label = f"{batch} x {source}->{size} {name}"
    print(f"{label:<34} {batch / jax_wall:>14.0f} {batch / host_wall:>15.0f} {host_wall / jax_wall:>6.2f}x   "
          f"{batch / jax_cpu:>14.0f} {batch / host_cpu:>14.0f} {host_cpu / jax_cpu:>6.2f}x")

