"""3DIEBench (Garrido et al., 2023) read from its official on-disk layout.

  ROOT/SYNSET/OBJECT/image_K.jpg, latent_K.npy   (K = 0..49)
  INDEX_DIR/{train,val}_images.npy               object paths such as "/02691156/1a04e3eab45ca15dd86060f189eb133"
  INDEX_DIR/{train,val}_labels.npy               (optional) class of each listed object

The index files ship with the SIE repository (data/); by default they are looked
for in ROOT. Examples match synthetic3d: image, label, latent (the first 7 floats
of latent_K.npy), object_id (position in the index file) and view_id (K).

The 2.6M files are not checked up front (that alone would take longer than many
runs); a view whose image or latent is missing or unreadable is an error naming
the file when it is read, or, with `skip_unreadable`, is replaced by the next
readable view of the same object (its image, latent and view_id together, so pairs
stay consistent) and counted in the log.
"""

import os
import threading

from absl import logging
import numpy as np
from PIL import Image

from steerjax.data import sources

VIEWS_PER_OBJECT = 50
NUM_CLASSES = 55
DOWNLOAD_HINT = (
    "Download 3DIEBench (17 GB) from https://dl.fbaipublicfiles.com/SIE/3DIEBench.tar.gz (linked from "
    "https://github.com/facebookresearch/SIE, data/README.md), unpack it, copy the index files "
    "data/{train,val}_images.npy and data/{train,val}_labels.npy of that repository into the dataset root "
    "(or set data.index_dir), and set the config key data.root to the unpacked folder.")


SKIP_HINT = ("re-extract it from the 3DIEBench archive, or set data.skip_unreadable=True to replace "
             "such views by the next readable view of their object")


def _missing(what: str) -> sources.DatasetNotFoundError:
  return sources.DatasetNotFoundError(f"3DIEBench: {what}.\n{DOWNLOAD_HINT}")


def _load_index(path: str) -> np.ndarray:
  try:
    return np.load(path)
  except Exception as e:  # pylint: disable=broad-except  # NumPy raises several types for bad files
    raise _missing(f"index file '{path}' is unreadable ({type(e).__name__}: {e}); copy it again "
                   "from the SIE repository's data/ folder") from None


class IEBenchSource:
  """All views of the objects listed for one split; example i is object i // 50, view i % 50."""

  def __init__(self, root: str, split: str, image_size: int | None = None, index_dir: str | None = None,
               views_per_object: int = VIEWS_PER_OBJECT, skip_unreadable: bool = False):
    if not root or not os.path.isdir(root):
      raise _missing("data.root is not set" if root is None else f"dataset root '{root}' does not exist")
    index_dir = index_dir or root
    images_file = os.path.join(index_dir, f"{split}_images.npy")
    if not os.path.exists(images_file):
      raise _missing(f"index file '{images_file}' not found")
    self.root, self.split, self.image_size, self.views = root, split, image_size, views_per_object
    self.skip_unreadable = skip_unreadable
    self.failed: set[tuple[str, int]] = set()  # (object folder, view) replaced so far
    self._lock = threading.Lock()
    self.objects = [str(p).lstrip("/") for p in _load_index(images_file)]
    labels_file = os.path.join(index_dir, f"{split}_labels.npy")
    if os.path.exists(labels_file):
      self.labels = _load_index(labels_file).astype(np.int32)
    else:  # class = rank of the synset among the synset folders in ROOT
      synsets = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
      absent = [p for p in self.objects if p.split("/")[0] not in synsets]
      if absent:
        raise _missing(f"'{os.path.join(root, absent[0])}', listed in '{images_file}', is missing "
                       f"(no synset folder {absent[0].split('/')[0]}; {len(absent)} such objects)")
      self.labels = np.array([synsets.index(p.split("/")[0]) for p in self.objects], np.int32)
    if len(self.labels) != len(self.objects):
      raise _missing(f"'{labels_file}' lists {len(self.labels)} labels for the {len(self.objects)} "
                     f"objects of '{images_file}'; copy both from the same SIE checkout")
    first = os.path.join(root, self.objects[0], "image_0.jpg") if self.objects else root
    if not os.path.exists(first):
      raise _missing(f"'{first}', listed in '{images_file}', is missing")

  def __len__(self) -> int:
    return len(self.objects) * self.views

  @property
  def has_views(self) -> bool:
    return True

  def object_table(self) -> np.ndarray:
    return np.arange(len(self)).reshape(len(self.objects), self.views)

  def _read(self, folder: str, view: int) -> tuple[np.ndarray, np.ndarray]:
    """(image, latent) of one view; raises (naming the file) if either is missing or unreadable."""
    path = os.path.join(folder, f"image_{view}.jpg")
    try:
      with Image.open(path) as im:
        image = np.asarray(im.convert("RGB"))
      path = os.path.join(folder, f"latent_{view}.npy")
      latent = np.load(path).astype(np.float32).reshape(-1)
      if latent.size < 7:
        raise ValueError(f"{latent.size} numbers, expected at least 7")
    except Exception as e:  # PIL and NumPy raise many types for bad files; all mean unreadable
      raise sources.UnreadableImageError(
          f"3DIEBench: cannot read {path} ({type(e).__name__}: {e})") from None
    return image, latent[:7]

  def __getitem__(self, i: int) -> dict:
    obj, view = divmod(int(i), self.views)
    folder = os.path.join(self.root, self.objects[obj])
    for k in range(view, view + self.views):
      try:
        image, latent = self._read(folder, k % self.views)
        break
      except sources.UnreadableImageError as e:
        if not self.skip_unreadable:
          raise sources.UnreadableImageError(f"{e}; {SKIP_HINT}") from None
        with self._lock:
          if (folder, k % self.views) not in self.failed:
            self.failed.add((folder, k % self.views))
            logging.warning("%s; skipped (data.skip_unreadable=True), %d views skipped so far in the "
                            "%s split", e, len(self.failed), self.split)
    else:
      raise sources.UnreadableImageError(
          f"3DIEBench: none of the {self.views} views in {folder} is readable (data.skip_unreadable "
          "replaces a view only by another view of its object); re-extract that folder from the archive")
    return dict(image=sources.to_rgb_square(image, self.image_size), label=self.labels[obj], latent=latent,
                object_id=np.int32(obj), view_id=np.int32(k % self.views))
