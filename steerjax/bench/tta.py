"""`python -m steerjax.bench tta [--model resnet50 --image-size 224 --num-views 64] [--json] [--out PNG]`.

Image-space vs steered test-time augmentation, timed side by side in one run.
A batch of B images gets N augmented views each (one set of sampled policy
parameters shared by both paths):

- image-space TTA (`steerjax.tta.image_tta`): augment and encode all B*N views
  (in chunks of --chunk views), linear head, mean of softmax;
- steered TTA (`steerjax.tta.steered_tta`): encode the B resized originals once,
  steer each embedding N times with a linear-in-g steerer (`LinearSteerer`,
  k basis products once, then O(N k d) per view), linear head, mean of softmax.

Encoder, steerer and head are randomly initialised: only the cost matters. Each
path is compiled ahead of time (`jit(...).lower(...).compile()`, so no warm-up
run is needed) and timed with `block_until_ready`; the reported time is the
minimum over --repeats runs (runs over 5 s are not repeated, to bound the
total time of ResNet-50 at large N on a CPU). The speedup is bounded by about N: steering
removes all but one encoder pass per image and adds N cheap steering products.

Without --model, two settings run: the default model (ResNet-18 x0.25, CIFAR
stem, 32x32, B=8) and ResNet-50 at 224x224 with B=2 (kept small so the whole
run fits in a few minutes on a shared 2-core CPU).
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from steerjax import augment
from steerjax import steerers
from steerjax import tta
from steerjax.models import resnet

DEFAULT_SETTINGS = (
    dict(model="resnet18", width=0.25, image_size=32, batch=8),
    dict(model="resnet50", width=1.0, image_size=224, batch=2),
)


def _build(model: str, width: float, image_size: int, batch: int, num_classes: int, seed: int = 0):
  """Random encoder/steerer/head variables, source images and the jitted pieces of both paths."""
  cifar_stem = image_size <= 64
  policy = augment.get_policy("simclr_cifar" if cifar_stem else "simclr_imagenet")
  encoder = resnet.get_encoder(model, width_multiplier=width, cifar_stem=cifar_stem)
  keys = jax.random.split(jax.random.key(seed), 5)
  images = jax.random.randint(keys[0], (batch, image_size, image_size, 3), 0, 256).astype(jnp.uint8)
  enc_vars = jax.jit(lambda k, x: encoder.init(k, x, train=False))(keys[1], jnp.zeros((1, image_size, image_size, 3)))
  dim = encoder.feature_dim
  steerer = steerers.LinearSteerer(dim=dim, g_dim=policy.param_dim)
  steer_vars = {"params": {"generators": 0.01 * jax.random.normal(keys[2], (policy.param_dim, dim, dim))}}
  head = {"w": jax.random.normal(keys[3], (dim, num_classes)) / np.sqrt(dim), "b": jnp.zeros(num_classes)}

  encoder_fn = lambda x: encoder.apply(enc_vars, x, train=False)
  head_fn = lambda e: e @ head["w"] + head["b"]

  def image_path(images, params, chunk):
    floats = images.astype(jnp.float32) / 255.0
    return tta.image_tta(encoder_fn, head_fn, floats, lambda im, p: policy.apply(im, p, image_size), params,
                         batch_size=chunk)

  def steered_path(images, params):
    z = encoder_fn(augment.resize_batch(images, image_size))
    return tta.steered_tta(
        head_fn, z, policy.encode(params),
        basis_fn=lambda zz: steerer.apply(steer_vars, zz, method="basis_apply"),
        combine_fn=lambda zz, basis, g: steerer.apply(steer_vars, zz, basis, g, method="combine"))

  def sample(num_views):
    view_keys = jax.random.split(keys[4], batch * num_views)
    params = jax.vmap(lambda k: policy.sample(k, (image_size, image_size)))(view_keys)
    return jax.tree.map(lambda p: p.reshape(batch, num_views, *p.shape[1:]), params)

  return images, sample, image_path, steered_path, dim


def _time(compiled, args, repeats: int, long_run_s: float = 5.0) -> float:
  """Minimum wall time over `repeats` runs; a run longer than `long_run_s` is not repeated."""
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    best = min(best, time.perf_counter() - t0)
    if best > long_run_s:
      break
  return best


def run_setting(model, width, image_size, batch, num_views, chunk, repeats, num_classes=1000) -> list[dict]:
  images, sample, image_path, steered_path, dim = _build(model, width, image_size, batch, num_classes)
  rows = []
  for n in num_views:
    params = sample(n)
    image_c = jax.jit(image_path, static_argnums=2).lower(images, params, min(chunk, batch * n)).compile()
    steered_c = jax.jit(steered_path).lower(images, params).compile()
    t_steered = _time(steered_c, (images, params), repeats)
    t_image = _time(image_c, (images, params), repeats)
    rows.append(dict(model=f"{model}x{width}", image_size=image_size, feature_dim=dim, batch=batch,
                     num_views=n, image_tta_s=t_image, steered_tta_s=t_steered,
                     speedup=t_image / t_steered, bound=n))
  return rows


def _plot(rows, path):
  # A Figure, not pyplot: no backend is switched, so a notebook calling this keeps its figures.
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  fig = Figure(figsize=(5.5, 4))
  ax = fig.subplots()
  for setting in dict.fromkeys((r["model"], r["image_size"]) for r in rows):
    sel = [r for r in rows if (r["model"], r["image_size"]) == setting]
    ax.plot([r["num_views"] for r in sel], [r["speedup"] for r in sel], marker="o",
            label=f"{setting[0]} @ {setting[1]}px")
  views = sorted({r["num_views"] for r in rows})
  ax.plot(views, views, "k--", label="bound N")
  ax.set_xscale("log", base=2)
  ax.set_yscale("log", base=2)
  ax.set_xlabel("views per image N")
  ax.set_ylabel("speedup of steered over image-space TTA")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(prog="python -m steerjax.bench tta")
  parser.add_argument("--model", help="resnet18 | resnet50; default: the two standard settings")
  parser.add_argument("--width", type=float, default=1.0)
  parser.add_argument("--image-size", type=int, default=224)
  parser.add_argument("--batch", type=int, default=None, help="images B (default 8 at <=64 px, else 2)")
  parser.add_argument("--num-views", default="1,8,32,64,256", help="comma-separated N values")
  parser.add_argument("--chunk", type=int, default=32, help="views per encoder call in image-space TTA")
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--json", action="store_true")
  parser.add_argument("--out", default="tta_speedup.png", help="PNG plot of speedup vs N")
  args = parser.parse_args(argv)
  num_views = [int(v) for v in args.num_views.split(",")]
  if args.model:
    batch = args.batch or (8 if args.image_size <= 64 else 2)
    settings = [dict(model=args.model, width=args.width, image_size=args.image_size, batch=batch)]
  else:
    settings = [dict(s, batch=args.batch or s["batch"]) for s in DEFAULT_SETTINGS]
  rows = [row for s in settings for row in run_setting(**s, num_views=num_views, chunk=args.chunk,
                                                      repeats=args.repeats)]
  _plot(rows, args.out)
  if args.json:
    print(json.dumps({"devices": str(jax.devices()), "results": rows}))
    return
  print(f"devices: {jax.devices()}  (plot: {args.out})")
  print(f"{'model':<14}{'image':>6}{'B':>4}{'N':>6}{'image TTA s':>13}{'steered s':>11}{'speedup':>9}"
        f"{'bound':>7}{'/bound':>8}")
  for r in rows:
    print(f"{r['model']:<14}{r['image_size']:>6}{r['batch']:>4}{r['num_views']:>6}{r['image_tta_s']:>13.4f}"
          f"{r['steered_tta_s']:>11.4f}{r['speedup']:>9.1f}{r['bound']:>7}{r['speedup'] / r['bound']:>8.2f}")
