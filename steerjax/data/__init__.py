"""Datasets: synthetic3d (embedded), 3DIEBench and image folders (on disk), tfds (without TensorFlow)."""

from typing import Any, NamedTuple

import numpy as np

from steerjax.data.sources import ArraySource, DatasetMismatchError, DatasetNotFoundError, UnreadableImageError

__all__ = ["ArraySource", "DatasetMismatchError", "DatasetNotFoundError", "Datasets", "SOURCES",
           "UnreadableImageError", "get_datasets", "read"]

# data.name values with their own source; any other name is read as a prepared tfds dataset.
SOURCES = ("synthetic3d", "3diebench", "folder")


class Datasets(NamedTuple):
  train: Any
  val: Any
  num_classes: int
  image_size: int
  has_views: bool


def get_datasets(data_cfg) -> Datasets:
  """Train and validation sources for `data_cfg.name` (one of SOURCES, or a tfds name)."""
  name, size = data_cfg.name, data_cfg.image_size
  if name == "synthetic3d":
    from steerjax.data import sources, synthetic3d  # pylint: disable=g-import-not-at-top
    seed = data_cfg.get("seed", 0)
    data = synthetic3d.load(data_cfg.get("num_objects", 2000), data_cfg.get("views_per_object", 10), size, seed)
    train_idx, val_idx = synthetic3d.split_by_object(data, data_cfg.get("val_fraction", 0.2), seed)
    return Datasets(ArraySource(sources.subset(data, train_idx)), ArraySource(sources.subset(data, val_idx)),
                    synthetic3d.NUM_CLASSES, size, True)
  if name == "3diebench":
    from steerjax.data import iebench  # pylint: disable=g-import-not-at-top
    root, index_dir = data_cfg.get("root") or None, data_cfg.get("index_dir") or None
    skip = data_cfg.get("skip_unreadable", False)
    return Datasets(iebench.IEBenchSource(root, "train", size, index_dir, skip_unreadable=skip),
                    iebench.IEBenchSource(root, "val", size, index_dir, skip_unreadable=skip),
                    iebench.NUM_CLASSES, size, True)
  if name == "folder":
    from steerjax.data import folder  # pylint: disable=g-import-not-at-top
    train, val, classes, _ = folder.folder_datasets(data_cfg.root, size, data_cfg.val_fraction, data_cfg.seed,
                                                    data_cfg.skip_unreadable)
    return Datasets(train, val, len(classes), size, False)
  from steerjax.data import tfds_source  # pylint: disable=g-import-not-at-top
  data_dir = data_cfg.get("data_dir") or None
  train = tfds_source.TfdsSource(name, data_cfg.get("train_split", "train"), data_dir, size,
                                 split_key="data.train_split")
  val = tfds_source.TfdsSource(name, data_cfg.get("val_split", "test"), data_dir, size,
                               split_key="data.val_split")
  return Datasets(train, val, train.num_classes, size, False)


def read(source, indices: np.ndarray) -> dict[str, np.ndarray]:
  """`source[indices]` as stacked arrays (one `take` where the source has it)."""
  if hasattr(source, "take"):
    return source.take(np.asarray(indices))
  examples = [source[int(i)] for i in indices]
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}
