"""A user's own image folder: ImageFolder class sub-folders, or a flat folder of unlabeled images.

  root/CLASS/.../*.jpg|jpeg|png   labels = index of CLASS among the sorted class folder names
  root/*.jpg|jpeg|png             unlabeled: label 0, one class

Images of any size (EXIF orientation applied, 16-bit PNGs scaled to 8 bits) are decoded and resized (shorter side, centre crop) on the host
per example, as the other sources do, so mixed sizes are fine and only file paths
are held in memory. There is no split on disk: a seeded hold-out of `val_fraction`
of the files is the validation set. Each file's header is checked when the folder
is indexed (PIL `verify`, in threads); an unreadable file is an error naming it,
or, with `skip_unreadable`, is dropped and counted. A file that passes the check
but fails to decode later (e.g. a truncated JPEG) is an error naming it, or, with
`skip_unreadable`, is replaced by the next decodable file of its split.
"""

import os
import threading
from concurrent import futures

from absl import logging
import numpy as np
from PIL import Image, ImageOps

from steerjax.data import sources

EXTENSIONS = (".jpg", ".jpeg", ".png")
SKIP_HINT = "fix or remove it, or set data.skip_unreadable=True to skip such files"


def _is_image(name: str) -> bool:
  return name.lower().endswith(EXTENSIONS) and not name.startswith(".")


def _images_under(folder: str) -> list[str]:
  """Image files below `folder` in a fixed (sorted, depth-first) order, hidden entries left out."""
  found = []
  for dirpath, dirnames, filenames in os.walk(folder):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    found += [os.path.join(dirpath, f) for f in sorted(filenames) if _is_image(f)]
  return found


def _readable(path: str) -> str | None:
  """None if PIL can parse the file, else why not."""
  try:
    with Image.open(path) as im:
      im.verify()
    return None
  except Exception as e:  # PIL raises many types for bad files; all mean unreadable
    return f"{type(e).__name__}: {e}"


def index_folder(root: str, skip_unreadable: bool = False,
                 num_workers: int = 16) -> tuple[list[str], np.ndarray, list[str], list[str]]:
  """(paths, int32 labels, class names, skipped paths) of every image under `root`."""
  if not root or not os.path.isdir(root):
    raise sources.DatasetNotFoundError(
        f"data.root={root!r} is not a folder; data.name='folder' needs data.root=PATH holding "
        "CLASS/*.jpg sub-folders or *.jpg/*.png images")
  entries = sorted(e for e in os.listdir(root) if not e.startswith("."))
  classes = [e for e in entries if os.path.isdir(os.path.join(root, e))]
  flat = [os.path.join(root, e) for e in entries if _is_image(e) and os.path.isfile(os.path.join(root, e))]
  if flat and classes:
    raise sources.DatasetNotFoundError(
        f"data.root={root!r} holds both images ({len(flat)}) and sub-folders ({', '.join(classes[:5])}"
        f"{', ...' if len(classes) > 5 else ''}); put every image in a class sub-folder, or all in the root")
  if flat:
    paths, labels, classes = flat, [0] * len(flat), ["unlabeled"]
  else:
    paths, labels = [], []
    for label, name in enumerate(classes):
      found = _images_under(os.path.join(root, name))
      paths += found
      labels += [label] * len(found)
    empty = [c for c, n in zip(classes, np.bincount(labels, minlength=len(classes))) if not n]
    if paths and empty:  # kept as classes so labels stay the sorted folder order
      logging.warning("data.root=%r: class folders without images: %s", root, ", ".join(empty))
  if not paths:
    where = f" nor in its sub-folders {', '.join(classes)}" if classes else ""
    raise sources.DatasetNotFoundError(
        f"no images ({'/'.join(EXTENSIONS)}) in data.root={root!r}: none among its files{where}")
  with futures.ThreadPoolExecutor(num_workers) as pool:
    problems = list(pool.map(_readable, paths))
  bad = [i for i, p in enumerate(problems) if p is not None]
  if bad and not skip_unreadable:
    raise sources.UnreadableImageError(f"cannot read image {paths[bad[0]]} ({problems[bad[0]]}); {SKIP_HINT}")
  if len(bad) == len(paths):
    raise sources.DatasetNotFoundError(f"all {len(paths)} images in data.root={root!r} are unreadable "
                                       f"(the first: {paths[0]}: {problems[0]})")
  keep = np.asarray([p is None for p in problems])
  return ([p for p, k in zip(paths, keep) if k], np.asarray(labels, np.int32)[keep], classes,
          [paths[i] for i in bad])


class FolderSource:
  """Random access to a list of image files as uint8 [size, size, 3] images and int32 labels."""

  def __init__(self, paths: list[str], labels: np.ndarray, image_size: int | None,
               skip_unreadable: bool = False):
    self.paths, self.labels, self.image_size = paths, labels, image_size
    self.skip_unreadable = skip_unreadable
    self.failed: set[str] = set()  # files that passed the index check but did not decode
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return len(self.paths)

  def _decode(self, path: str) -> np.ndarray:
    with Image.open(path) as im:
      im = ImageOps.exif_transpose(im)  # cameras store "rotate me" in EXIF; equivariance needs it applied
      if im.mode == "I" or im.mode.startswith("I;16"):  # 16-bit grey PNG: convert("RGB") would clip it to white
        return (np.asarray(im) >> 8).astype(np.uint8)
      return np.asarray(im.convert("RGB"))

  def __getitem__(self, i: int) -> dict:
    i = int(i)
    for j in range(i, i + len(self.paths)):
      j %= len(self.paths)
      try:
        image = self._decode(self.paths[j])
        return dict(image=sources.to_rgb_square(image, self.image_size), label=self.labels[j])
      except Exception as e:  # PIL raises many types for bad data; all mean undecodable
        if not self.skip_unreadable:
          raise sources.UnreadableImageError(
              f"cannot decode image {self.paths[j]} ({type(e).__name__}: {e}); {SKIP_HINT}") from None
        with self._lock:
          if self.paths[j] not in self.failed:
            self.failed.add(self.paths[j])
            logging.warning("skipping undecodable image %s (%s: %s); %d skipped so far in this split",
                            self.paths[j], type(e).__name__, e, len(self.failed))
    raise sources.UnreadableImageError(f"no image of this split decodes (the first: {self.paths[i]})")


def folder_datasets(root: str, image_size: int, val_fraction: float, seed: int,
                    skip_unreadable: bool = False) -> tuple[FolderSource, FolderSource, list[str], list[str]]:
  """(train, val, class names, skipped paths); val is a hold-out of `val_fraction` seeded by `seed`."""
  paths, labels, classes, skipped = index_folder(root, skip_unreadable)
  if len(paths) < 2:
    raise sources.DatasetNotFoundError(f"data.root={root!r} has {len(paths)} readable image; need at least 2 "
                                       "so one can be held out for validation")
  if skipped:
    logging.warning("data.root=%r: skipped %d unreadable of %d images (data.skip_unreadable=True), "
                    "the first: %s", root, len(skipped), len(paths) + len(skipped), skipped[0])
  order = np.random.default_rng(seed).permutation(len(paths))
  num_val = min(len(paths) - 1, max(1, round(val_fraction * len(paths))))
  pick = lambda idx: FolderSource([paths[i] for i in idx], labels[idx], image_size, skip_unreadable)
  return pick(np.sort(order[num_val:])), pick(np.sort(order[:num_val])), classes, skipped
