"""synthetic3d: determinism, latent ranges, balance, visibility of every latent, no hidden symmetry, cache."""

import os
import time

import numpy as np
import pytest
from PIL import Image

from steerjax.data import rotations, synthetic3d


@pytest.fixture(scope="module")
def small():
  return synthetic3d.generate(2 * synthetic3d.NUM_CLASSES, 3, 32, seed=0)


def render(objects, index, latents, size=32):
  """Renders object `index` once per latent row."""
  latents = np.asarray(latents, np.float32)
  batch = {k: np.repeat(v[index:index + 1], len(latents), 0) for k, v in objects.items()}
  return np.asarray(synthetic3d.render(batch, latents, size)).astype(np.float64)


def test_shapes_and_types(small):
  n = 2 * synthetic3d.NUM_CLASSES * 3
  assert small["image"].shape == (n, 32, 32, 3) and small["image"].dtype == np.uint8
  assert small["latent"].shape == (n, 7) and small["latent"].dtype == np.float32
  for key in ("label", "object_id", "view_id"):
    assert small[key].shape == (n,) and small[key].dtype == np.int32
  np.testing.assert_array_equal(small["object_id"], np.repeat(np.arange(n // 3), 3))
  np.testing.assert_array_equal(small["view_id"], np.tile(np.arange(3), n // 3))
  assert len(synthetic3d.CLASS_NAMES) == synthetic3d.NUM_CLASSES >= 10


def test_same_seed_same_bytes_other_seed_different(small):
  again = synthetic3d.generate(2 * synthetic3d.NUM_CLASSES, 3, 32, seed=0)
  for key in small:
    assert small[key].tobytes() == again[key].tobytes(), key
  other = synthetic3d.generate(2 * synthetic3d.NUM_CLASSES, 3, 32, seed=1)
  assert not np.array_equal(other["image"], small["image"])
  assert not np.array_equal(other["latent"], small["latent"])


def test_size_64():
  data = synthetic3d.generate(3, 2, 64, seed=0)
  assert data["image"].shape == (6, 64, 64, 3)


def test_latent_ranges():
  lat = synthetic3d.sample_latents(np.random.default_rng(0), 20000).astype(np.float64)
  lows = [-np.pi / 2] * 3 + [0, 0, 0, 0]
  highs = [np.pi / 2] * 3 + [1, np.pi / 4, 2 * np.pi, 1]
  for i, (lo, hi) in enumerate(zip(lows, highs)):
    assert lat[:, i].min() >= lo and lat[:, i].max() <= hi
    # Uniform: the range is filled and the mean and variance match U(lo, hi).
    assert lat[:, i].min() < lo + 0.01 * (hi - lo) and lat[:, i].max() > hi - 0.01 * (hi - lo)
    assert abs(lat[:, i].mean() - (lo + hi) / 2) < 0.02 * (hi - lo)
    assert abs(lat[:, i].var() - (hi - lo) ** 2 / 12) < 0.03 * (hi - lo) ** 2 / 12


def test_class_balance_and_object_disjoint_split():
  data = synthetic3d.generate(5 * synthetic3d.NUM_CLASSES, 2, 32, seed=3)
  counts = np.bincount(data["label"], minlength=synthetic3d.NUM_CLASSES)
  assert np.all(counts == counts[0])
  assert np.all(data["label"].reshape(-1, 2) == data["label"].reshape(-1, 2)[:, :1])  # one class per object
  train, val = synthetic3d.split_by_object(data, 0.2, seed=0)
  assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(data["label"])
  assert not set(data["object_id"][train]) & set(data["object_id"][val])
  np.testing.assert_array_equal(np.bincount(data["label"][val], minlength=synthetic3d.NUM_CLASSES), 2)
  again = synthetic3d.split_by_object(data, 0.2, seed=0)
  np.testing.assert_array_equal(again[1], val)


def test_every_latent_changes_the_pixels():
  _, objects = synthetic3d.build_objects(synthetic3d.NUM_CLASSES, seed=0)
  base = np.array([0.2, -0.3, 0.5, 0.1, 0.4, 1.0, 0.6], np.float32)
  variants = [base]
  for i, value in enumerate([1.2, 0.9, -0.8, 0.6, 0.05, 4.0, 0.1]):
    lat = base.copy()
    lat[i] = value
    variants.append(lat)
  for index in (0, 5):
    images = render(objects, index, variants)
    diffs = np.abs(images[1:] - images[:1]).mean((1, 2, 3))
    assert np.all(diffs > 1.0), diffs
  # The floor shows the floor hue: corner pixels follow latent[3] and nothing else about the object.
  corners = render(objects, 0, [base, np.concatenate([base[:3], [0.6], base[4:]])])[:, :3, :3].mean((1, 2))
  assert np.abs(corners[0] - corners[1]).max() > 20


def test_no_rotation_symmetry_hides_the_pose():
  """Turning an object by 90 or 180 degrees about any of its axes changes its image."""
  labels, objects = synthetic3d.build_objects(synthetic3d.NUM_CLASSES, seed=0)
  base = np.array([0.3, -0.2, 0.4, 0.5, 0.3, 1.0, 0.1])
  r_base = rotations.euler_to_matrix(base[:3])
  latents = [base]
  for axis in range(3):
    for angle in (np.pi / 2, np.pi, -np.pi / 2):
      turn = np.zeros(3)
      turn[axis] = angle
      m = r_base @ rotations.euler_to_matrix(turn)  # turned in the object's own frame
      angles = [np.arctan2(m[2, 1], m[2, 2]), -np.arcsin(np.clip(m[2, 0], -1, 1)), np.arctan2(m[1, 0], m[0, 0])]
      np.testing.assert_allclose(rotations.euler_to_matrix(angles), m, atol=1e-9)
      latents.append(np.concatenate([angles, base[3:]]))
  for index in range(synthetic3d.NUM_CLASSES):
    images = render(objects, index, latents)
    diffs = np.abs(images[1:] - images[:1]).mean((1, 2, 3))
    assert diffs.min() > 2.0, (synthetic3d.CLASS_NAMES[labels[index]], diffs)


def test_cache_round_trip(tmp_path, monkeypatch):
  monkeypatch.setenv("STEERJAX_CACHE", str(tmp_path))
  first = synthetic3d.load(4, 2, 32, seed=5)
  path = synthetic3d.cache_path(4, 2, 32, seed=5)
  assert path.startswith(str(tmp_path)) and os.path.exists(path)
  assert synthetic3d.cache_path(4, 2, 32, seed=6) != path
  start = time.perf_counter()
  second = synthetic3d.load(4, 2, 32, seed=5)
  assert time.perf_counter() - start < 2.0
  for key in first:
    np.testing.assert_array_equal(first[key], second[key])
  assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []


def test_contact_sheet_cli(tmp_path):
  out = tmp_path / "sheet.png"
  synthetic3d.main(["--out", str(out), "--size", "32", "--views", "2"])
  assert np.asarray(Image.open(out)).shape == (32 * synthetic3d.NUM_CLASSES, 32 * 2, 3)


@pytest.mark.slow
def test_default_size_is_fast(tmp_path, monkeypatch):
  monkeypatch.setenv("STEERJAX_CACHE", str(tmp_path))
  start = time.perf_counter()
  data = synthetic3d.load(2000, 10, 32, seed=0)
  assert time.perf_counter() - start < 60 and data["image"].shape == (20000, 32, 32, 3)
  start = time.perf_counter()
  synthetic3d.load(2000, 10, 32, seed=0)
  assert time.perf_counter() - start < 2


def test_get_datasets_splits_by_object(tmp_path, monkeypatch):
  import ml_collections  # pylint: disable=g-import-not-at-top
  from steerjax import data  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("STEERJAX_CACHE", str(tmp_path))
  cfg = ml_collections.ConfigDict(dict(name="synthetic3d", image_size=32, num_objects=5 * synthetic3d.NUM_CLASSES,
                                       views_per_object=2, val_fraction=0.2, seed=0))
  ds = data.get_datasets(cfg)
  assert ds.has_views and ds.num_classes == synthetic3d.NUM_CLASSES and ds.image_size == 32
  assert len(ds.train) + len(ds.val) == 10 * synthetic3d.NUM_CLASSES and len(ds.val) == 2 * synthetic3d.NUM_CLASSES
  assert not set(ds.train.arrays["object_id"]) & set(ds.val.arrays["object_id"])
  assert ds.val.object_table().shape == (synthetic3d.NUM_CLASSES, 2)


@pytest.mark.parametrize("fault", ["truncate", "garble"])
def test_damaged_cache_is_named_and_rendered_again(tmp_path, monkeypatch, capsys, fault):
  monkeypatch.setenv("STEERJAX_CACHE", str(tmp_path))
  first = synthetic3d.load(4, 2, 32, seed=5)
  path = synthetic3d.cache_path(4, 2, 32, seed=5)
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    if fault == "truncate":
      f.truncate(size // 2)
    else:
      f.write(b"\x00" * 64)
  again = synthetic3d.load(4, 2, 32, seed=5)
  assert f"the synthetic3d cache {path} is unreadable" in capsys.readouterr().out
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])
  assert os.path.getsize(path) == size  # the cache was rewritten whole


def test_factor_probe_targets_are_continuous_encodings_of_the_latents():
  from steerjax.evaluators import factor_probe  # pylint: disable=g-import-not-at-top
  latent = synthetic3d.sample_latents(np.random.default_rng(0), 64)
  t = factor_probe.rendered_targets(latent)
  rot = t["rotation"].reshape(-1, 3, 3)
  np.testing.assert_allclose(rot @ rot.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rot.shape),
                             atol=1e-6)
  for name in ("floor_hue", "light_hue", "light_direction"):
    np.testing.assert_allclose(np.linalg.norm(t[name], axis=-1), 1, atol=1e-6)
  # Hue 0 and hue 1 are the same colour: the same target.
  hues = factor_probe.rendered_targets(np.c_[np.zeros((2, 3)), [[0.0], [1.0]], np.zeros((2, 2)),
                                             [[0.0], [1.0]]])
  for name in ("floor_hue", "light_hue"):
    np.testing.assert_allclose(hues[name][0], hues[name][1], atol=1e-6)
