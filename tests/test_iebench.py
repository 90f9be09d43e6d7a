"""3DIEBench reader on a tiny fake tree written in the official layout."""

import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
from PIL import Image

from steerjax import data
from steerjax.data import iebench, loader, rotations

SYNSETS = ("02691156", "03001627")
OBJECTS = {"train": [("02691156", "1a04e3eab45ca15dd86060f189eb133"), ("03001627", "abc123"),
                     ("03001627", "def456")],
           "val": [("02691156", "ffee00")]}


def write_tree(root, with_labels=True):
  rng = np.random.default_rng(0)
  expected = {}
  for split, objects in OBJECTS.items():
    paths = []
    for synset, obj in objects:
      folder = root / synset / obj
      folder.mkdir(parents=True)
      for k in range(iebench.VIEWS_PER_OBJECT):
        colour = rng.integers(0, 256, 3)
        Image.fromarray(np.full((24, 24, 3), colour, np.uint8)).save(folder / f"image_{k}.jpg", quality=95)
        latent = rng.uniform(0, 1, 7).astype(np.float32)
        np.save(folder / f"latent_{k}.npy", latent)
        expected[(synset, obj, k)] = (colour, latent)
      paths.append(f"/{synset}/{obj}")
    np.save(root / f"{split}_images.npy", np.array(paths))
    if with_labels:
      np.save(root / f"{split}_labels.npy", np.array([SYNSETS.index(s) + 10 for s, _ in objects]))
  return expected


def test_examples_match_the_files(tmp_path):
  expected = write_tree(tmp_path)
  src = iebench.IEBenchSource(str(tmp_path), "train", image_size=8)
  assert len(src) == 3 * 50 and src.has_views
  for i in (0, 49, 50, 149):
    ex = src[i]
    synset, obj = OBJECTS["train"][i // 50]
    colour, latent = expected[(synset, obj, i % 50)]
    assert ex["image"].shape == (8, 8, 3) and ex["image"].dtype == np.uint8
    assert np.abs(ex["image"].astype(int) - colour).max() <= 8  # JPEG
    np.testing.assert_array_equal(ex["latent"], latent)
    assert ex["label"] == SYNSETS.index(synset) + 10
    assert (ex["object_id"], ex["view_id"]) == (i // 50, i % 50)


def test_labels_from_synset_folders_without_label_files(tmp_path):
  write_tree(tmp_path, with_labels=False)
  src = iebench.IEBenchSource(str(tmp_path), "train")
  assert [int(src[i * 50]["label"]) for i in range(3)] == [0, 1, 1]
  assert src[0]["image"].shape == (24, 24, 3)


def test_pairs_and_get_datasets(tmp_path):
  write_tree(tmp_path)
  cfg = ml_collections.ConfigDict(dict(name="3diebench", image_size=16, root=str(tmp_path)))
  ds = data.get_datasets(cfg)
  assert ds.has_views and len(ds.train) == 150 and len(ds.val) == 50 and ds.num_classes == 55
  ld = loader.Loader(ds.train, 3, seed=0, pairs=True, process_index=0, process_count=1)
  batch = ld.batch(0)
  assert batch["image"].shape == batch["image2"].shape == (3, 16, 16, 3)
  assert np.all(batch["view_id"] != batch["view_id2"])
  assert sorted(batch["object_id"].tolist()) == [0, 1, 2]
  np.testing.assert_allclose(batch["transform"], rotations.relative_transform(batch["latent"], batch["latent2"]))


def test_missing_root_says_where_to_download(tmp_path):
  with pytest.raises(data.DatasetNotFoundError) as err:
    iebench.IEBenchSource(str(tmp_path / "nope"), "train")
  message = str(err.value)
  assert str(tmp_path / "nope") in message and "facebookresearch/SIE" in message and "data.root" in message


def test_missing_index_file(tmp_path):
  with pytest.raises(data.DatasetNotFoundError, match="train_images.npy"):
    iebench.IEBenchSource(str(tmp_path), "train")


def test_missing_or_unreadable_view_is_named_or_replaced_and_counted(tmp_path, caplog):
  expected = write_tree(tmp_path)
  (synset, obj), (synset1, obj1) = OBJECTS["train"][0], OBJECTS["train"][1]
  (tmp_path / synset / obj / "image_3.jpg").unlink()
  (tmp_path / synset1 / obj1 / "latent_7.npy").write_bytes(b"not a .npy file")
  jpeg = tmp_path / synset1 / obj1 / "image_9.jpg"
  jpeg.write_bytes(jpeg.read_bytes()[:200])  # truncated: the header opens, the pixels do not
  src = iebench.IEBenchSource(str(tmp_path), "train", image_size=8)
  for i, name in ((3, f"{synset}/{obj}/image_3.jpg"), (57, f"{obj1}/latent_7.npy"),
                  (59, f"{obj1}/image_9.jpg")):
    with pytest.raises(data.UnreadableImageError) as err:
      src[i]
    assert name in str(err.value) and "data.skip_unreadable=True" in str(err.value)

  src = iebench.IEBenchSource(str(tmp_path), "train", image_size=8, skip_unreadable=True)
  for i, view in ((3, 4), (3, 4), (57, 8), (59, 10)):  # each replaced by the next readable view
    ex = src[i]
    s, o = OBJECTS["train"][i // 50]
    colour, latent = expected[(s, o, view)]
    assert (ex["object_id"], ex["view_id"]) == (i // 50, view)
    np.testing.assert_array_equal(ex["latent"], latent)
    assert np.abs(ex["image"].astype(int) - colour).max() <= 8
  assert len(src.failed) == 3  # the repeated read is counted once
  assert "views skipped so far in the train split" in caplog.text and "3 views skipped" in caplog.text
  for view in range(50):
    (tmp_path / synset / obj / f"latent_{view}.npy").unlink()
  with pytest.raises(data.UnreadableImageError, match=f"none of the 50 views in .*{obj} is readable"):
    src[0]


def test_unreadable_index_file_is_named(tmp_path):
  write_tree(tmp_path)
  (tmp_path / "train_labels.npy").write_bytes(b"garbage")
  with pytest.raises(data.DatasetNotFoundError, match="train_labels.npy' is unreadable"):
    iebench.IEBenchSource(str(tmp_path), "train")


def test_cli_unreadable_view_is_one_line_exit_2(tmp_path):
  write_tree(tmp_path / "data")
  for path in (tmp_path / "data").glob("*/*/latent_*.npy"):
    path.write_bytes(b"")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run(
      [sys.executable, "-m", "steerjax.main", "--config", "configs/sie_3diebench.py", "--workdir",
       str(tmp_path / "run"), f"--config.data.root={tmp_path / 'data'}", "--config.batch_size=2"],
      cwd=root, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert lines[0].startswith(f"error: 3DIEBench: cannot read {tmp_path / 'data'}") and "latent_" in lines[0]
