"""Input-pipeline throughput: `python -m steerjax.bench input [--steps N] [--batch B] [--jpeg]`.

Times Loader.iterate (host side only: index order, gather or decode + resize,
pair transforms, prefetch) over synthetic3d in memory, single and pairs, and
over mocked tfds sources (read per example in 8 threads, resized on the host;
the mock makes up random examples on every read, so it bounds the per-example
overhead rather than measuring disk reads).

`--jpeg` instead writes a 3DIEBench-layout folder of 256-px JPEGs rendered from synthetic3d
and times steerjax's loader on it beside a PyTorch DataLoader (PIL decode, the same number of
workers: threads for steerjax, whose JPEG decode releases the GIL, processes for PyTorch),
both reading every example once in a shuffled order; per-worker rates size a GPU host.
"""

import argparse
import os
import tempfile
import time
import warnings

import numpy as np
from PIL import Image

from steerjax.data import iebench, loader, sources, synthetic3d, tfds_source


def _rate(source, batch, steps, pairs=False):
  ld = loader.Loader(source, batch, seed=0, pairs=pairs, process_index=0, process_count=1)
  it = ld.iterate(0, steps + 1)
  next(it)  # warm-up: thread start, first permutation
  start = time.perf_counter()
  for _ in it:
    pass
  return steps * batch / (time.perf_counter() - start)


def write_iebench_folder(root: str, num_objects: int, views: int, size: int = 256) -> None:
  """synthetic3d renders as ROOT/SYNSET/OBJECT/image_K.jpg + latent_K.npy with the index files.

  Rendered at 64 px and upsampled to `size` (rendering at 256 px takes gigabytes): decoding
  cost depends on the JPEG's size far more than on its detail.
  """
  data = synthetic3d.generate(num_objects, views, 64, seed=0)
  paths = []
  for obj in range(num_objects):
    rows = np.flatnonzero(data["object_id"] == obj)
    path = f"{data['label'][rows[0]]:08d}/object{obj:05d}"
    os.makedirs(os.path.join(root, path))
    for row in rows:
      view = int(data["view_id"][row])
      image = Image.fromarray(data["image"][row]).resize((size, size), Image.BICUBIC)
      image.save(os.path.join(root, path, f"image_{view}.jpg"), quality=95)
      np.save(os.path.join(root, path, f"latent_{view}.npy"), np.pad(data["latent"][row], (0, 2)))
    paths.append("/" + path)
  np.save(os.path.join(root, "train_images.npy"), np.array(paths))


class _TorchFolder:
  """The same folder read as a PyTorch user would: PIL open, convert, to an array."""

  def __init__(self, root: str, views: int):
    self.files = [os.path.join(root, str(p).lstrip("/"), f"image_{v}.jpg")
                  for p in np.load(os.path.join(root, "train_images.npy")) for v in range(views)]

  def __len__(self):
    return len(self.files)

  def __getitem__(self, i):
    with Image.open(self.files[i]) as im:
      return np.array(im.convert("RGB"))


def jpeg_rates(num_objects: int, views: int, batch: int, workers: int) -> dict:
  """-> examples/s of steerjax's Loader and of a PyTorch DataLoader over the same JPEG folder."""
  import torch.utils.data  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as root:
    write_iebench_folder(root, num_objects, views)
    steps = num_objects * views // batch - 1
    source = iebench.IEBenchSource(root, "train", image_size=256, views_per_object=views)
    ld = loader.Loader(source, batch, seed=0, process_index=0, process_count=1, num_workers=workers)
    it = ld.iterate(0, steps + 1)
    next(it)
    start = time.perf_counter()
    for _ in it:
      pass
    ours = steps * batch / (time.perf_counter() - start)
    torch_loader = torch.utils.data.DataLoader(_TorchFolder(root, views), batch_size=batch, shuffle=True,
                                               num_workers=workers, drop_last=True)
    with warnings.catch_warnings():  # JAX warns that forking a multithreaded process may deadlock
      warnings.simplefilter("ignore", RuntimeWarning)
      it = iter(torch_loader)
    next(it)  # worker start-up
    start = time.perf_counter()
    for _ in range(steps):
      next(it)
    theirs = steps * batch / (time.perf_counter() - start)
  return {"steerjax": ours, "pytorch": theirs}


def main(argv):
  parser = argparse.ArgumentParser(prog="python -m steerjax.bench input", description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--batch", type=int, default=256)
  parser.add_argument("--num_objects", type=int, default=2000)
  parser.add_argument("--jpeg", action="store_true", help="3DIEBench-layout JPEG folder vs a PyTorch DataLoader")
  parser.add_argument("--workers", type=int, default=os.cpu_count())
  args = parser.parse_args(argv)
  if args.jpeg:
    try:
      import torch  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
      raise SystemExit("error: --jpeg compares with PyTorch: pip install -e '.[bench]'") from None
    views = 10
    rates = jpeg_rates(max(1, args.batch * (args.steps + 2) // views), views, args.batch, args.workers)
    print(f"3DIEBench-layout folder, 256-px JPEGs, batch {args.batch}, {args.workers} workers, "
          f"{os.cpu_count()} CPU cores")
    print(f"{'loader':24s} {'examples/s':>12s} {'per worker':>12s}")
    for name, rate in rates.items():
      print(f"{name:24s} {rate:12.0f} {rate / args.workers:12.0f}")
    print(f"steerjax / pytorch: {rates['steerjax'] / rates['pytorch']:.2f}x")
    return

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


