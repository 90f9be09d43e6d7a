"""`python -m steerjax.bench eval [--sizes 10000,100000] [--num-views 8,64,256] [--small] [--json]`.

Evaluation at scale, in the functions the evaluators call:

- streamed embedding: `Context.split_arrays("val")` (the features every probe, kNN and OOD
  evaluator reads) over mocked tfds `imagenet_resized/64x64` val splits of each size, each size
  in a fresh subprocess so its peak host RSS (`ru_maxrss`) is its own. The compile happens in a
  warm-up chunk first; throughput is over the whole split (host reads included). The RSS growth
  from the smallest to the largest split is printed next to the growth of the kept arrays
  (features + labels): streaming holds N·d, never N·H·W·3, so their ratio should stay near 1
  (target: within 1.5 plus a constant).
- TTA: per-image time of the evaluator's image-space and steered TTA (`evaluators.tta.view_fns`,
  which calls `steerjax.tta`), each jitted on its own (the unused path is dead code), B images,
  N views each.

The encoder is the default model (ResNet-18 x0.25) with the ImageNet stem at 64 px, randomly
initialised (only cost and memory matter). The mock makes up (seeded) examples on every read.
`--small` runs tiny sizes in a few seconds (what the CI test checks: the structure and that
the numbers are computed, not their speed).
"""

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

DATASET = "imagenet_resized/64x64"


def _config(model: str, image_size: int, width: float, eval_batch: int):
  from steerjax import config as config_lib  # pylint: disable=g-import-not-at-top
  cfg = config_lib.base_config()
  cfg.data.name, cfg.data.image_size = DATASET, image_size
  cfg.data.train_split, cfg.data.val_split = "train", "validation"
  cfg.model.name, cfg.model.width_multiplier, cfg.model.cifar_stem = model, width, False
  cfg.batch_size, cfg.progress = 8, False
  cfg.eval.batch_size, cfg.eval.max_examples = eval_batch, 0
  return cfg


def _context(cfg):
  """An evaluation Context of `cfg`'s model, randomly initialised (no train state is built:
  compiling the optimiser's init would cost more than the small benchmark)."""
  import jax  # pylint: disable=g-import-not-at-top
  from steerjax import data  # pylint: disable=g-import-not-at-top
  from steerjax import evaluators  # pylint: disable=g-import-not-at-top
  from steerjax import methods  # pylint: disable=g-import-not-at-top
  from steerjax import train  # pylint: disable=g-import-not-at-top
  from steerjax.data.loader import Loader  # pylint: disable=g-import-not-at-top
  datasets = data.get_datasets(cfg.data)
  method = methods.get_method(cfg, datasets.num_classes)
  model = method.build_model()
  example = Loader(datasets.train, 2, seed=0, pairs=method.needs_pairs, process_index=0,
                   process_count=1, prefetch=0).batch(0)
  variables = jax.jit(lambda: train.init_variables(method, model, example, cfg.seed))()
  run = train.Run(cfg, method, model, datasets, None, None, example, 0.0, True)
  return evaluators.Context(run, "", variables, None)


def _rss_bytes() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def stream_child(n: int, model: str, image_size: int, width: float, eval_batch: int) -> dict:
  """Streams an n-example val split through the evaluators' embedding path; run in a fresh
  process so `ru_maxrss` is this size's peak alone."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  with tfds.testing.mock_data(num_examples=n):
    ctx = _context(_config(model, image_size, width, eval_batch))
    source = ctx.run.datasets.val
    ctx.stream(source, np.arange(min(n, eval_batch)), ctx.variables)  # compile, same shapes
    base = _rss_bytes()
    start = time.perf_counter()
    kept = ctx.split_arrays("val")
    seconds = time.perf_counter() - start
    peak = _rss_bytes()
  return dict(examples=n, seconds=seconds, examples_per_s=n / seconds,
              feature_dim=int(kept["features"].shape[1]),
              kept_bytes=int(sum(v.nbytes for v in kept.values())),
              rss_base_bytes=base, rss_peak_bytes=peak)


def _stream_in_subprocess(n: int, args) -> dict:
  code = ("import json, sys; from steerjax.bench import eval as b; "
          f"print('RESULT ' + json.dumps(b.stream_child({n}, {args.model!r}, {args.image_size}, "
          f"{args.width}, "
          f"{args.eval_batch})))")
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
  if proc.returncode or not lines:
    raise RuntimeError(f"streaming {n} examples failed:\n{proc.stderr[-3000:]}")
  return json.loads(lines[-1][len("RESULT "):])


def memory_ratio(rows: list[dict]) -> dict:
  """RSS growth from the smallest to the largest split over the growth of the kept arrays."""
  lo, hi = rows[0], rows[-1]
  growth = hi["rss_peak_bytes"] - lo["rss_peak_bytes"]
  extra = hi["kept_bytes"] - lo["kept_bytes"]
  return dict(rss_growth_bytes=growth, extra_kept_bytes=extra, ratio=growth / extra)


def tta_times(num_views: list[int], images: int, model: str, image_size: int, width: float,
              eval_batch: int, repeats: int) -> list[dict]:
  """Seconds per image of the evaluator's image-space and steered TTA at each N."""
  import jax  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from steerjax.evaluators import tta as tta_eval  # pylint: disable=g-import-not-at-top
  with tfds.testing.mock_data(num_examples=max(images, 8)):
    ctx = _context(_config(model, image_size, width, eval_batch))
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (images, image_size, image_size, 3), dtype=np.uint8)
  keys = np.asarray(jax.random.split(jax.random.PRNGKey(0), images))
  c = ctx.run.datasets.num_classes
  d = ctx.fns.embed(ctx.variables, np.zeros((1, image_size, image_size, 3), np.float32)).shape[1]
  head = dict(w=rng.normal(size=(d, c)).astype(np.float32) / np.sqrt(d),
              b=np.zeros(c, np.float32), mean=np.zeros(d, np.float32), std=np.ones(d, np.float32))
  state = (ctx.variables, head)
  rows = []
  for n in num_views:
    programs = tta_eval.view_fns(ctx, n)
    row = dict(num_views=n, images=images)
    for mode in ("image", "steered"):
      compiled = jax.jit(programs[mode]).lower(state, x, keys).compile()
      best = float("inf")
      for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(state, x, keys))
        best = min(best, time.perf_counter() - start)
      row[f"{mode}_s_per_image"] = best / images
    row["speedup"] = row["image_s_per_image"] / row["steered_s_per_image"]
    rows.append(row)
  return rows


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(prog="python -m steerjax.bench eval",
                                   description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", default="10000,100000", help="comma-separated split sizes")
  parser.add_argument("--num-views", default="8,64,256", help="comma-separated TTA N values")
  parser.add_argument("--images", type=int, default=8, help="images B per TTA call")
  parser.add_argument("--image-size", type=int, default=64)
  parser.add_argument("--model", default="resnet18", help="encoder (model.name)")
  parser.add_argument("--width", type=float, default=0.25, help="model.width_multiplier")
  parser.add_argument("--eval-batch", type=int, default=512, help="eval.batch_size")
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--small", action="store_true", help="tiny sizes, for the CI test")
  parser.add_argument("--json", action="store_true")
  args = parser.parse_args(argv)
  if args.small:
    args.sizes, args.num_views, args.images = "128,512", "2", 2
    # The Mixer: its init compiles in a fraction of a ResNet's, which dominates at this size.
    args.model, args.image_size, args.width, args.eval_batch, args.repeats = "mixer", 16, 0.125, 128, 1
  sizes = sorted(int(s) for s in args.sizes.split(","))
  views = [int(v) for v in args.num_views.split(",")]

  stream = [_stream_in_subprocess(n, args) for n in sizes]
  memory = memory_ratio(stream)
  tta = tta_times(views, args.images, args.model, args.image_size, args.width, args.eval_batch,
                  args.repeats)
  if args.json:
    print(json.dumps(dict(stream=stream, memory=memory, tta=tta)))
    return
  mb = lambda b: b / 2**20
  print(f"streamed embedding (Context.split_arrays), {args.model} x{args.width} (model.cifar_stem "
        f"False), "
        f"{args.image_size} px, mocked tfds {DATASET}, eval.batch_size {args.eval_batch}")
  print(f"{'examples':>9}{'seconds':>9}{'ex/s':>8}{'kept MB':>9}{'base RSS MB':>13}"
        f"{'peak RSS MB':>13}")
  for r in stream:
    print(f"{r['examples']:>9}{r['seconds']:>9.1f}{r['examples_per_s']:>8.0f}"
          f"{mb(r['kept_bytes']):>9.1f}{mb(r['rss_base_bytes']):>13.0f}{mb(r['rss_peak_bytes']):>13.0f}")
  print(f"peak RSS growth {sizes[0]} -> {sizes[-1]}: {mb(memory['rss_growth_bytes']):.1f} MB for "
        f"{mb(memory['extra_kept_bytes']):.1f} MB of extra features + labels: ratio "
        f"{memory['ratio']:.2f} (target <= 1.5 plus a constant)")
  print(f"\nTTA in the evaluator (evaluators.tta.view_fns), B = {args.images}, ms per image")
  print(f"{'N':>5}{'image':>10}{'steered':>10}{'speedup':>9}")
  for r in tta:
    print(f"{r['num_views']:>5}{1e3 * r['image_s_per_image']:>10.2f}"
          f"{1e3 * r['steered_s_per_image']:>10.3f}{r['speedup']:>9.1f}")
