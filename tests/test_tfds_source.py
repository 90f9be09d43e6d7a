"""tfds sources read through tfds.data_source, faked offline with tfds.testing.mock_data."""

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from steerjax import data
from steerjax.data import loader, sources, tfds_source


@pytest.mark.parametrize("name,split,size", [
    ("cifar10", "train", 32),
    ("cifar100", "test", 32),
    ("oxford_flowers102", "train", 48),
    ("imagenet2012_corrupted/gaussian_noise_1", "validation", 64),
    ("dtd", "train", 40),
])
def test_mocked_source_gives_fixed_square_uint8(name, split, size):
  with tfds.testing.mock_data(num_examples=6):
    src = tfds_source.TfdsSource(name, split, image_size=size)
    assert len(src) == 6 and src.num_classes > 1
    for i in range(len(src)):
      ex = src[i]
      assert ex["image"].shape == (size, size, 3) and ex["image"].dtype == np.uint8
      assert ex["label"].dtype == np.int32 and 0 <= ex["label"] < src.num_classes


def test_get_datasets_and_loader_over_tfds():
  cfg = ml_collections.ConfigDict(dict(name="cifar10", image_size=32, data_dir=None, train_split="train",
                                       val_split="test"))
  with tfds.testing.mock_data(num_examples=20):
    ds = data.get_datasets(cfg)
    assert ds.num_classes == 10 and not ds.has_views and len(ds.train) == 20
    ld = loader.Loader(ds.train, 8, 0, process_index=0, process_count=1)
    batch = ld.batch(1)
    assert batch["image"].shape == (8, 32, 32, 3) and batch["label"].shape == (8,)
    np.testing.assert_array_equal(batch["image"][0], ds.train[int(ld.global_indices(1)[0])]["image"])


def test_missing_dataset_names_dataset_dir_and_fix(tmp_path):
  with pytest.raises(data.DatasetNotFoundError) as err:
    tfds_source.TfdsSource("cifar10", "train", data_dir=str(tmp_path))
  message = str(err.value)
  assert "cifar10" in message and str(tmp_path) in message and "tfds build" in message
  assert issubclass(data.DatasetNotFoundError, FileNotFoundError)


def test_unknown_dataset_is_not_found(tmp_path):
  with pytest.raises(data.DatasetNotFoundError, match="no_such_dataset"):
    tfds_source.TfdsSource("no_such_dataset", "train", data_dir=str(tmp_path))


def test_to_rgb_square_resizes_and_centre_crops():
  grey = np.full((20, 40), 7, np.uint8)
  out = sources.to_rgb_square(grey, 10)
  assert out.shape == (10, 10, 3) and np.all(out == 7)
  # Left third red, middle third green, right third blue: the centre crop of a 1:3 image is green
  # (the antialiasing filter blends the outermost columns with their neighbours).
  wide = np.zeros((30, 90, 3), np.uint8)
  wide[:, :30, 0] = wide[:, 30:60, 1] = wide[:, 60:, 2] = 255
  out = sources.to_rgb_square(wide, 12)
  assert out.shape == (12, 12, 3)
  np.testing.assert_array_equal(out[:, 1:-1], np.broadcast_to([0, 255, 0], (12, 10, 3)))
  same = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
  np.testing.assert_array_equal(sources.to_rgb_square(same, 4), same)
