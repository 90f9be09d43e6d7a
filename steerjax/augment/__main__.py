"""`python -m steerjax.augment --policy NAME --out grid.png`: images x views, parameters under each view.

Rows are source images (synthetic3d renders, or procedural shapes where that
module is missing); the first column is the plain resize, the others augmented
views, each captioned with its exact parameters. For "byol" the columns
alternate view 1 and view 2.
"""

import argparse

import jax
import matplotlib
import numpy as np

from steerjax import augment

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)

_JITTER_LETTERS = "BCSH"


def source_images(num_images: int, size: int, seed: int) -> np.ndarray:
  """uint8 [N, size, size, 3]: synthetic3d renders, else gradients with shapes."""
  try:
    from steerjax.data import synthetic3d
  except ImportError:
    synthetic3d = None
  if synthetic3d is not None:
    return synthetic3d.load(num_images, 1, size, seed)["image"]
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:size, 0:size] / size
  images = []
  for _ in range(num_images):
    base = rng.uniform(size=3)
    image = np.stack([base[0] * (1 - y), base[1] * x, base[2] * np.full_like(x, 0.5)], -1)
    cy, cx, r = rng.uniform(0.25, 0.75), rng.uniform(0.25, 0.75), rng.uniform(0.1, 0.25)
    image[(y - cy) ** 2 + (x - cx) ** 2 < r ** 2] = rng.uniform(size=3)
    image[int(0.1 * size):int(0.3 * size), int(0.6 * size):int(0.9 * size)] = rng.uniform(size=3)
    images.append(image)
  return (np.stack(images) * 255).astype(np.uint8)


def caption(params) -> str:
  """Three short lines: crop/flip, colour jitter (ops in applied order), grayscale/blur/solarize."""
  top, left, height, width = params["box"]
  lines = [f"crop t{top:.2f} l{left:.2f} h{height:.2f} w{width:.2f}" + (" flip" if params["flip"] else "")]
  if params["jitter"]:
    b, c, s, h = params["factors"]
    order = "".join(_JITTER_LETTERS[i] for i in params["order"])
    lines.append(f"{order} b{b:.2f} c{c:.2f} s{s:.2f} h{h:+.2f}")
  else:
    lines.append("no jitter")
  extra = ["gray"] * bool(params["grayscale"]) + [f"blur σ{params['sigma']:.2f}"] * bool(params["blur"])
  lines.append(" ".join(extra + ["solarize"] * bool(params["solarize"])) or "-")
  return "\n".join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--policy", default="simclr_imagenet", help=f"one of {', '.join(augment.POLICY_NAMES)}")
  parser.add_argument("--out", default="grid.png")
  parser.add_argument("--num_images", type=int, default=4)
  parser.add_argument("--num_views", type=int, default=6)
  parser.add_argument("--source_size", type=int, default=128, help="side of the source images")
  parser.add_argument("--size", type=int, default=96, help="side of the views")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)

  policy = augment.get_policy(args.policy)
  views_policies = policy if isinstance(policy, tuple) else (policy,)
  images = source_images(args.num_images, args.source_size, args.seed)
  columns = [("original", np.asarray(augment.resize_batch(images, args.size)), None)]
  keys = jax.random.split(jax.random.key(args.seed), args.num_views)
  for v, key in enumerate(keys):
    view_policy = views_policies[v % len(views_policies)]
    views, _, params = augment.augment_batch_with_params(view_policy, key, images, args.size)
    columns.append((view_policy.name, np.asarray(views), jax.tree.map(np.asarray, params)))

  fig, axes = plt.subplots(args.num_images, len(columns), squeeze=False,
                           figsize=(2.3 * len(columns), 2.75 * args.num_images))
  for col, (title, views, params) in enumerate(columns):
    for row in range(args.num_images):
      ax = axes[row, col]
      ax.imshow(np.clip(views[row], 0, 1))
      ax.set_xticks([])
      ax.set_yticks([])
      if row == 0:
        ax.set_title(title, fontsize=9)
      if params is not None:
        ax.set_xlabel(caption(jax.tree.map(lambda p: p[row], params)), fontsize=6.5, family="monospace")
  fig.suptitle(f"policy {args.policy}: {args.source_size}px sources -> {args.size}px views "
               f"(blur kernel {views_policies[0].blur_kernel_size(args.size)})", fontsize=10)
  fig.tight_layout()
  fig.savefig(args.out, dpi=110)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
