"""3DIEBench (Garrido et al., 2023) read from its official on-disk layout.

  ROOT/SYNSET/OBJECT/image_K.jpg, latent_K.npy   (K = 0..49)
  INDEX_DIR/{train,val}_images.npy               object paths such as "/02691156/1a04e3eab45ca15dd86060f189eb133"
  INDEX_DIR/{train,val}_labels.npy               (optional) class of each listed object

The index files ship with the SIE repository (data/); by default they are looked
for in ROOT. Examples match synthetic3d: image, label, latent (the first 7 floats
of latent_K.npy), object_id (position in the index file) and view_id (K).
"""

import os

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


def _missing(what: str) -> sources.DatasetNotFoundError:
  return sources.DatasetNotFoundError(f"3DIEBench: {what}.\n{DOWNLOAD_HINT}")


class IEBenchSource:
  """All views of the objects listed for one split; example i is object i // 50, view i % 50."""

  def __init__(self, root: str, split: str, image_size: int | None = None, index_dir: str | None = None,
               views_per_object: int = VIEWS_PER_OBJECT):
    if not root or not os.path.isdir(root):
      raise _missing("data.root is not set" if root is None else f"dataset root '{root}' does not exist")
    index_dir = index_dir or root
    images_file = os.path.join(index_dir, f"{split}_images.npy")
    if not os.path.exists(images_file):
      raise _missing(f"index file '{images_file}' not found")
    self.root, self.split, self.image_size, self.views = root, split, image_size, views_per_object
    self.objects = [str(p).lstrip("/") for p in np.load(images_file)]
    labels_file = os.path.join(index_dir, f"{split}_labels.npy")
    if os.path.exists(labels_file):
      self.labels = np.load(labels_file).astype(np.int32)
    else:  # class = rank of the synset among the synset folders in ROOT
      synsets = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
      self.labels = np.array([synsets.index(p.split("/")[0]) for p in self.objects], np.int32)
    assert len(self.labels) == len(self.objects), (labels_file, images_file)
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

  def __getitem__(self, i: int) -> dict:
    obj, view = divmod(int(i), self.views)
    folder = os.path.join(self.root, self.objects[obj])
    with Image.open(os.path.join(folder, f"image_{view}.jpg")) as im:
      image = np.asarray(im.convert("RGB"))
    latent = np.load(os.path.join(folder, f"latent_{view}.npy")).astype(np.float32)[:7]
    return dict(image=sources.to_rgb_square(image, self.image_size), label=self.labels[obj], latent=latent,
                object_id=np.int32(obj), view_id=np.int32(view))
