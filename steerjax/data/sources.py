"""Random-access example sources shared by every dataset.

A source has `len(src)` and `src[i] -> dict` of one example (uint8 `image`
[H, W, 3], int `label`, plus `latent`, `object_id`, `view_id` for multi-view
data). Sources that hold everything in memory expose `src.arrays`; sources of
several views per object expose `src.object_table()` so pairs can be drawn.
"""

import numpy as np
from PIL import Image


class DatasetNotFoundError(FileNotFoundError):
  """A dataset is missing or not prepared; the message says where it looked and what to do."""


class DatasetMismatchError(ValueError):
  """The dataset cannot serve the configured batch or pairs; the message names the config key."""


class UnreadableImageError(ValueError):
  """An image file of a dataset cannot be decoded; the message names it and how to skip such files."""


class ArraySource:
  """Examples held as a dict of equal-length NumPy arrays."""

  def __init__(self, arrays: dict):
    lengths = {len(v) for v in arrays.values()}
    assert len(lengths) == 1, f"arrays of different lengths: { {k: len(v) for k, v in arrays.items()} }"
    self.arrays = arrays

  def __len__(self) -> int:
    return len(next(iter(self.arrays.values())))

  def __getitem__(self, i: int) -> dict:
    return {k: v[i] for k, v in self.arrays.items()}

  def take(self, indices: np.ndarray) -> dict:
    """A batch of examples at once (one fancy index per array)."""
    return {k: v[indices] for k, v in self.arrays.items()}

  @property
  def has_views(self) -> bool:
    return "object_id" in self.arrays

  def object_table(self) -> np.ndarray:
    return object_table(self.arrays["object_id"], self.arrays["view_id"])


def subset(arrays: dict, indices: np.ndarray) -> dict:
  return {k: v[indices] for k, v in arrays.items()}


def object_table(object_id: np.ndarray, view_id: np.ndarray) -> np.ndarray:
  """int64 [num_objects, views]: example index of each (object, view), objects in id order.

  Every object must have the same number of views (true of synthetic3d and 3DIEBench).
  """
  order = np.lexsort((view_id, object_id))
  objects, counts = np.unique(object_id, return_counts=True)
  assert np.all(counts == counts[0]), "objects have different numbers of views"
  return order.reshape(len(objects), counts[0])


def to_rgb_square(image: np.ndarray, size: int | None) -> np.ndarray:
  """uint8 [size, size, 3]: grey to RGB, shorter side resized to `size`, centre crop.

  Resizing happens on the host so the device always sees one fixed shape; PIL's
  bilinear filter widens its support when shrinking, i.e. it antialiases.
  """
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  image = image[..., :3]
  h, w = image.shape[:2]
  if size is None or (h == size and w == size):
    return np.ascontiguousarray(image, dtype=np.uint8)
  scale = size / min(h, w)
  new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
  resized = np.asarray(Image.fromarray(image.astype(np.uint8)).resize((new_w, new_h), Image.BILINEAR))
  top, left = (new_h - size) // 2, (new_w - size) // 2
  return resized[top:top + size, left:left + size]
