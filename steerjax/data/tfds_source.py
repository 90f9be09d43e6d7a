"""tfds datasets read without TensorFlow, through `tfds.data_source` (ArrayRecord + NumPy).

Preparing an image dataset still needs TensorFlow, so users prepare it once
elsewhere (or point `data_dir` at a bucket); here we only read, never download.
"""

import os

import numpy as np

from steerjax.data import sources

# Datasets steerjax uses (others registered in tfds work too, if they have `image` and `label`).
KNOWN_DATASETS = ("cifar10", "cifar100", "imagenet2012", "imagenet2012_corrupted/*", "cifar10_corrupted/*",
                  "oxford_flowers102", "caltech_birds2011", "dtd", "oxford_iiit_pet", "food101", "cars196",
                  "stl10")


def default_data_dir() -> str:
  return os.environ.get("TFDS_DATA_DIR", os.path.join(os.path.expanduser("~"), "tensorflow_datasets"))


def _not_found(name: str, split: str, data_dir: str, cause: Exception) -> sources.DatasetNotFoundError:
  return sources.DatasetNotFoundError(
      f"tfds dataset '{name}' (split '{split}') is not prepared in data_dir '{data_dir}'.\n"
      f"Prepare it once on a machine with TensorFlow, in ArrayRecord format:\n"
      f"  pip install tensorflow tensorflow-datasets\n"
      f"  tfds build {name} --data_dir={data_dir} --file_format=array_record\n"
      f"(ImageNet needs its archives placed in {data_dir}/downloads/manual first), then copy "
      f"or mount that folder here, or set the config key data.data_dir to where it lives.\n"
      f"(data.name is a tfds name unless it is one of steerjax's own sources: synthetic3d, 3diebench, folder)\n"
      f"(tfds said: {type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''})")


def _prepared_splits(tfds, name: str, data_dir: str) -> list[str]:
  """The splits prepared for `name` in `data_dir` (none if it is not prepared there at all)."""
  try:
    return list(tfds.builder(name, data_dir=data_dir).info.splits)
  except Exception:  # pylint: disable=broad-except  # not registered, not prepared, unreadable info
    return []


def _no_split(name: str, split: str, data_dir: str, splits: list[str], split_key: str | None,
              cause: Exception) -> sources.DatasetNotFoundError:
  use = f"set {split_key} to one of them" if split_key else "ask for one of them"
  said = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
  return sources.DatasetNotFoundError(
      f"tfds dataset '{name}' in data_dir '{data_dir}' has no split '{split}' (prepared there: "
      f"{', '.join(splits)}; tfds said: {said}); "
      f"{use}, or prepare the split with `tfds build {name} --data_dir={data_dir} "
      "--file_format=array_record` where TensorFlow is installed")


class TfdsSource:
  """Random access to a prepared tfds split as uint8 [size, size, 3] images and int labels.

  `split_key`: the config key that chose `split`, named when the split is not prepared.
  """

  def __init__(self, name: str, split: str, data_dir: str | None = None, image_size: int | None = None,
               split_key: str | None = None):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (slow import, only when used)
    self.name, self.split, self.image_size = name, split, image_size
    self.data_dir = data_dir or default_data_dir()
    try:
      self._source = tfds.data_source(name, split=split, data_dir=self.data_dir, download=False)
      features = self._source.dataset_info.features
    except Exception as e:  # tfds raises several types here; all mean "cannot read it"
      splits = _prepared_splits(tfds, name, self.data_dir)
      if splits:
        raise _no_split(name, split, self.data_dir, splits, split_key, e) from None
      raise _not_found(name, split, self.data_dir, e) from e
    if "image" not in features or "label" not in features:
      raise ValueError(f"tfds dataset '{name}' has no image/label features: {list(features)}")
    self.num_classes = features["label"].num_classes

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, i: int) -> dict:
    example = self._source[int(i)]
    return dict(image=sources.to_rgb_square(example["image"], self.image_size),
                label=np.int32(example["label"]))
