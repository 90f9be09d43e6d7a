"""Input-pipeline throughput: `python -m steerjax.bench input [--steps N] [--batch B]`.

Times Loader.iterate (host side only: index order, gather or decode + resize,
pair transforms, prefetch) over synthetic3d in memory, single and pairs, and
over mocked tfds sources (read per example in 8 threads, resized on the host;
the mock makes up random examples on every read, so it bounds the per-example
overhead rather than measuring disk reads).
"""

import argparse
import time

from steerjax.data import loader, sources, synthetic3d, tfds_source


def _rate(source, batch, steps, pairs=False):
  ld = loader.Loader(source, batch, seed=0, pairs=pairs, process_index=0, process_count=1)
  it = ld.iterate(0, steps + 1)
  next(it)  # warm-up: thread start, first permutation
  start = time.perf_counter()
  for _ in it:
    pass
  return steps * batch / (time.perf_counter() - start)


def main(argv):
  parser = argparse.ArgumentParser(prog="python -m steerjax.bench input", description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--num_objects", type=int, default=2000)
  args = parser.parse_args(argv)

  rows = []
  data = synthetic3d.load(args.num_objects, 10, 32, seed=0)
  src = sources.ArraySource(data)
  rows.append(("synthetic3d 32px, single", _rate(src, args.batch, args.steps)))
  rows.append(("synthetic3d 32px, pairs", _rate(src, args.batch, args.steps, pairs=True)))

  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  n = args.batch * (args.steps + 1)
  with tfds.testing.mock_data(num_examples=n):
    for label, name, split, size in (("tfds cifar10 (mock) 32px", "cifar10", "train", 32),
                                     ("tfds imagenet2012_corrupted (mock) 224->64px",
                                      "imagenet2012_corrupted/gaussian_noise_1", "validation", 64)):
      rows.append((label, _rate(tfds_source.TfdsSource(name, split, image_size=size), args.batch, args.steps)))

  base = rows[0][1]
  print(f"{'source':48s} {'examples/s':>12s} {'vs synthetic3d':>15s}")
  for name, rate in rows:
    print(f"{name:48s} {rate:12.0f} {rate / base:14.2f}x")


