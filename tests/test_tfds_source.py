"""tfds sources read through tfds.data_source, faked offline with tfds.testing.mock_data."""

import os
import subprocess
import sys

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


def _prepare_train_split_only(data_dir):
  """A real prepared-dataset folder (dataset_info.json, features.json) whose only split is train."""
  builder = tfds.builder("cifar10", data_dir=str(data_dir), file_format="array_record")
  template = tfds.core.ShardedFileTemplate(data_dir=builder.data_dir, dataset_name="cifar10", split="train",
                                           filetype_suffix="array_record",
                                           template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}")
  builder.info.set_splits(tfds.core.SplitDict(
      [tfds.core.SplitInfo(name="train", shard_lengths=[4], num_bytes=0, filename_template=template)]))
  os.makedirs(builder.data_dir)
  builder.info.write_to_directory(builder.data_dir)


def test_prepared_dataset_without_the_split_names_it_and_the_key(tmp_path):
  _prepare_train_split_only(tmp_path)
  assert len(tfds_source.TfdsSource("cifar10", "train", data_dir=str(tmp_path))) == 4
  with pytest.raises(data.DatasetNotFoundError) as err:
    tfds_source.TfdsSource("cifar10", "test", data_dir=str(tmp_path), split_key="data.val_split")
  message = str(err.value)
  assert "\n" not in message
  assert message.startswith(f"tfds dataset 'cifar10' in data_dir '{tmp_path}' has no split 'test' "
                            "(prepared there: train;")
  assert "set data.val_split to one of them" in message and "tfds build cifar10" in message


def test_cli_missing_split_is_one_line_exit_2(tmp_path):
  _prepare_train_split_only(tmp_path / "tfds")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run(
      [sys.executable, "-m", "steerjax.main", "--config", "configs/simclr_cifar10.py", "--workdir",
       str(tmp_path / "run"), f"--config.data.data_dir={tmp_path / 'tfds'}"],
      cwd=root, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert "has no split 'test'" in lines[0] and "data.val_split" in lines[0]
