"""data.name='folder': real PNG/JPEG files in a temporary folder, both layouts, bad files, the CLI."""

import os
import subprocess
import sys

import ml_collections
import numpy as np
from PIL import Image
import pytest

from steerjax import config as config_lib
from steerjax import data
from steerjax.data import folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(path, size, colour, fmt):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  w, h = size
  image = np.zeros((h, w, 3), np.uint8) + np.asarray(colour, np.uint8)
  Image.fromarray(image).save(path, format=fmt)


def _class_folders(root, per_class=4):
  """cat/ (PNG, mixed sizes, one in a nested folder), dog/ (JPEG), ant/ (grey PNG); written out of order."""
  for k in range(per_class):
    _write(root / "dog" / f"d{k}.jpg", (40 + 7 * k, 30), (0, 200, 0), "JPEG")
    _write(root / "cat" / ("sub" if k == 0 else "") / f"c{k}.PNG", (20 + 5 * k, 50 - 3 * k), (200, 0, 0), "PNG")
    os.makedirs(root / "ant", exist_ok=True)
    Image.fromarray(np.full((16, 24), 90, np.uint8)).save(root / "ant" / f"a{k}.png")  # mode L
  (root / "cat" / "notes.txt").write_text("not an image")
  os.makedirs(root / ".ipynb_checkpoints")


def _flat(root, n=10):
  for k in range(n):
    _write(root / f"img{k:02d}.{'png' if k % 2 else 'jpeg'}", (10 + 3 * k, 12 + k), (k * 20, 5, 5),
           "PNG" if k % 2 else "JPEG")


def _cfg(root, **kw):
  c = config_lib.base_config().data
  c.name, c.root, c.image_size = "folder", str(root), 8
  c.update(kw)
  return c


def test_class_folders_label_by_sorted_name_and_resize(tmp_path):
  _class_folders(tmp_path)
  paths, labels, classes, skipped = folder.index_folder(str(tmp_path))
  assert classes == ["ant", "cat", "dog"] and skipped == []
  assert len(paths) == 12 and [os.path.basename(os.path.dirname(p)) for p in paths[4:8]] == ["cat"] * 3 + ["sub"]
  for p, y in zip(paths, labels):
    assert classes[y] == os.path.relpath(p, tmp_path).split(os.sep)[0]
  d = data.get_datasets(_cfg(tmp_path, val_fraction=0.25))
  assert d.num_classes == 3 and not d.has_views and len(d.train) + len(d.val) == 12 and len(d.val) == 3
  colours = {0: (90, 90, 90), 1: (200, 0, 0), 2: (0, 200, 0)}
  for source in (d.train, d.val):
    for i in range(len(source)):
      ex = source[i]
      assert ex["image"].shape == (8, 8, 3) and ex["image"].dtype == np.uint8
      # Uniform images stay uniform through resize; JPEG may move a colour by a few levels.
      np.testing.assert_allclose(ex["image"].reshape(-1, 3).mean(0), colours[int(ex["label"])], atol=4)


def test_flat_folder_is_one_unlabeled_class_with_a_seeded_disjoint_holdout(tmp_path):
  _flat(tmp_path)
  train, val, classes, _ = folder.folder_datasets(str(tmp_path), 8, 0.3, seed=1)
  assert classes == ["unlabeled"] and (len(train), len(val)) == (7, 3)
  assert set(train.paths).isdisjoint(val.paths) and len(set(train.paths) | set(val.paths)) == 10
  assert np.all(train.labels == 0) and np.all(val.labels == 0)
  again, _, _, _ = folder.folder_datasets(str(tmp_path), 8, 0.3, seed=1)
  assert again.paths == train.paths
  others = [folder.folder_datasets(str(tmp_path), 8, 0.3, seed=s)[1].paths for s in range(2, 8)]
  assert any(o != val.paths for o in others)
  assert train[0]["image"].shape == (8, 8, 3)


def test_exif_orientation_is_applied_and_16_bit_png_is_scaled(tmp_path):
  image = np.zeros((8, 16, 3), np.uint8)
  image[:, :4] = 255  # white left quarter of a landscape image
  exif = Image.Exif()
  exif[0x0112] = 6  # "rotate 90° clockwise to display"
  Image.fromarray(image).save(tmp_path / "phone.jpg", exif=exif, quality=95)
  Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(tmp_path / "deep.png")
  source = folder.FolderSource([str(tmp_path / "phone.jpg"), str(tmp_path / "deep.png")],
                               np.zeros(2, np.int32), None)
  shown = source[0]["image"]
  assert shown.shape == (16, 8, 3)  # portrait, as a viewer shows it
  np.testing.assert_allclose(shown[:4].mean(), 255, atol=12)  # the white quarter is now on top
  np.testing.assert_allclose(shown[6:].mean(), 0, atol=12)
  np.testing.assert_array_equal(source[1]["image"], np.full((8, 8, 3), 40000 >> 8, np.uint8))


def test_missing_and_empty_folders_say_where_they_looked(tmp_path):
  with pytest.raises(data.DatasetNotFoundError, match="is not a folder"):
    folder.index_folder(str(tmp_path / "nope"))
  (tmp_path / "a").mkdir()
  (tmp_path / "a" / "readme.txt").write_text("x")
  with pytest.raises(data.DatasetNotFoundError, match=r"no images .* in data.root=.* sub-folders a"):
    folder.index_folder(str(tmp_path))
  _write(tmp_path / "top.png", (4, 4), (1, 2, 3), "PNG")
  with pytest.raises(data.DatasetNotFoundError, match=r"both images \(1\) and sub-folders \(a\)"):
    folder.index_folder(str(tmp_path))


def test_unreadable_file_is_named_or_skipped_and_counted(tmp_path, caplog):
  _flat(tmp_path, 6)
  bad = tmp_path / "img99.jpg"
  bad.write_bytes(b"\xff\xd8 this is not a jpeg")
  with pytest.raises(data.UnreadableImageError, match=r"cannot read image .*img99\.jpg.*skip_unreadable=True"):
    folder.index_folder(str(tmp_path))
  paths, _, _, skipped = folder.index_folder(str(tmp_path), skip_unreadable=True)
  assert skipped == [str(bad)] and len(paths) == 6 and str(bad) not in paths
  train, val, _, _ = folder.folder_datasets(str(tmp_path), 8, 0.5, 0, skip_unreadable=True)
  assert len(train) + len(val) == 6
  assert "skipped 1 unreadable of 7 images" in caplog.text and "img99.jpg" in caplog.text


def test_truncated_jpeg_fails_at_decode_or_is_replaced(tmp_path):
  _flat(tmp_path, 4)
  good = (tmp_path / "img00.jpeg").read_bytes()
  (tmp_path / "img00.jpeg").write_bytes(good[:len(good) // 2])  # header intact: passes the index check
  source = folder.FolderSource([str(tmp_path / "img00.jpeg"), str(tmp_path / "img02.jpeg")],
                               np.zeros(2, np.int32), 8)
  with pytest.raises(data.UnreadableImageError, match=r"cannot decode image .*img00\.jpeg"):
    source[0]
  source.skip_unreadable = True
  np.testing.assert_array_equal(source[0]["image"], source[1]["image"])
  assert source.failed == {str(tmp_path / "img00.jpeg")}


def test_config_names_the_key_for_folder_mistakes(tmp_path):
  cfg = config_lib.base_config()
  cfg.data.name = "folders"
  with pytest.raises(config_lib.ConfigError, match="config.data.name='folders' is not allowed; expected one of "
                     "synthetic3d, 3diebench, folder, or a prepared tfds name"):
    config_lib.validate(cfg)
  cfg.data.name = "folder"
  with pytest.raises(config_lib.ConfigError, match="config.data.root='' is not allowed"):
    config_lib.validate(cfg)
  cfg.data.root = str(tmp_path)
  config_lib.validate(cfg)


def _main(tmp_path, *overrides):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, "-m", "steerjax.main", "--config", "configs/folder.py",
                         "--workdir", str(tmp_path / "run"), *overrides], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("corrupt", [False, True])
def test_cli_bad_folder_is_one_line_exit_2(tmp_path, corrupt):
  (tmp_path / "imgs").mkdir()
  if corrupt:
    _flat(tmp_path / "imgs", 3)
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG garbage")
  proc = _main(tmp_path, f"--config.data.root={tmp_path / 'imgs'}")
  assert proc.returncode == 2, proc.stderr
  expected = "error: cannot read image " + str(tmp_path / "imgs" / "broken.png") if corrupt else "error: no images"
  assert proc.stderr.strip().splitlines()[-1].startswith(expected) and "Traceback" not in proc.stderr


@pytest.mark.slow  # ~60 s on 2 shared cores, almost all of it compiling
def test_cli_trains_a_few_steps_on_a_class_folder(tmp_path):
  _class_folders(tmp_path / "imgs", per_class=8)
  proc = _main(tmp_path, f"--config.data.root={tmp_path / 'imgs'}", "--config.data.image_size=16",
               "--config.total_steps=3", "--config.batch_size=8", "--config.model.width_multiplier=0.125",
               "--config.head.proj_hidden=32", "--config.head.proj_dim=16", "--config.eval.evaluators=()",
               "--config.progress=false", "--config.log_every=1", "--config.checkpoint_every=3")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert os.path.exists(tmp_path / "run" / "config.json")
