"""steerjax's ImageNet-C corruptions against the `imagecorruptions` package, on the same images and seeds."""

import importlib.util
import json
import os
import re
import sys
import types

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from steerjax import config as config_lib
from steerjax.evaluators import ood as ood_eval
from steerjax.metrics import corruptions


def _load_reference():
  """imagecorruptions 1.1.2's `corrupt(image, severity, name)`, run with a given seed.

  On today's stack the package needs three shims, confined to its own module: `pkg_resources`
  (gone from setuptools; a stub only while it imports), `np.float_` (gone from NumPy 2) and
  scikit-image's `gaussian(multichannel=True)` (now `channel_axis=-1`). Its impulse noise calls
  scikit-image's `random_noise` without a seed; the shim hands it a Generator from the same seed.
  """
  if importlib.util.find_spec("imagecorruptions") is None:
    return None
  stub = None
  if importlib.util.find_spec("pkg_resources") is None:
    stub = types.ModuleType("pkg_resources")
    stub.resource_filename = lambda package, path: os.path.join(
        os.path.dirname(sys.modules[package].__file__), path)
    sys.modules["pkg_resources"] = stub
  try:
    import imagecorruptions  # pylint: disable=g-import-not-at-top
    from imagecorruptions import corruptions as module  # pylint: disable=g-import-not-at-top
  finally:
    if stub is not None:
      del sys.modules["pkg_resources"]
  import skimage.color, skimage.filters, skimage.util  # pylint: disable=g-import-not-at-top,g-multiple-import
  numpy = types.ModuleType("numpy")
  numpy.__dict__.update(np.__dict__)
  numpy.float_ = np.float64
  module.np = numpy
  module.gaussian = lambda image, sigma=1, multichannel=False, **kw: skimage.filters.gaussian(
      image, sigma, channel_axis=-1 if multichannel else None, **kw)
  seeds = {}
  module.sk = types.SimpleNamespace(color=skimage.color, util=types.SimpleNamespace(
      random_noise=lambda image, **kw: skimage.util.random_noise(
          image, rng=np.random.default_rng(seeds["seed"]), **kw)))

  def reference(image, name, severity, seed):
    np.random.seed(seed)
    seeds["seed"] = seed
    return imagecorruptions.corrupt(image, severity=severity, corruption_name=name)
  return reference


REFERENCE = _load_reference()


def _images(shape, n, seed):
  """Smooth colour patches plus texture, so blurs, JPEG and colour maps all have work to do."""
  rng = np.random.default_rng(seed)
  base = rng.integers(40, 216, (n, 1, 1, 3))
  texture = rng.integers(-40, 40, (n, *shape, 3))
  return np.clip(base + texture, 0, 255).astype(np.uint8)


@pytest.mark.skipif(REFERENCE is None, reason="the reference, imagecorruptions, is not installed: "
                    "pip install -e '.[corruptions]'")
@pytest.mark.parametrize("name", corruptions.CORRUPTIONS + corruptions.EXTRA_CORRUPTIONS)
def test_equals_imagecorruptions(name):
  # 32 px (CIFAR, the package's minimum) and a non-square size; each image at its own index.
  for shape in ((32, 32), (40, 56)):
    images = _images(shape, 2, seed=len(name))
    for severity in range(1, 6):
      ours = corruptions.corrupt(images, name, severity, seed=5)
      for i, image in enumerate(images):
        ref = REFERENCE(image, name, severity, corruptions.image_seed(5, name, severity, i))
        assert ref.shape == ours[i].shape and ref.dtype == np.uint8
        if name in ("defocus_blur", "frost"):  # OpenCV's filter2D / bicubic resize, re-implemented
          diff = np.abs(ref.astype(int) - ours[i])
          assert diff.max() <= 1 and np.mean(diff > 0) < 0.005, (severity, diff.max(), np.mean(diff > 0))
        else:
          np.testing.assert_array_equal(ours[i], ref, err_msg=f"{name} severity {severity}")


@pytest.mark.parametrize("name", corruptions.CORRUPTIONS + corruptions.EXTRA_CORRUPTIONS)
def test_any_size_dtypes_determinism_and_chunks(name):
  images = _images((16, 24), 3, seed=1)  # below the package's 32-px minimum
  errors = []
  for severity in range(1, 6):
    out = corruptions.corrupt(images, name, severity, seed=3)
    assert out.shape == images.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, corruptions.corrupt(images, name, severity, seed=3))
    errors.append(np.mean((out.astype(float) - images) ** 2))
  assert errors[-1] > 0
  if name != "saturate":  # saturate first desaturates, then oversaturates
    assert errors[-1] >= errors[0]
  chunks = np.concatenate([corruptions.corrupt(images[:1], name, 3, seed=3),
                           corruptions.corrupt(images[1:], name, 3, seed=3, indices=[1, 2])])
  np.testing.assert_array_equal(chunks, corruptions.corrupt(images, name, 3, seed=3))
  floats = corruptions.corrupt(images / 255.0, name, 3, seed=3)
  assert floats.dtype == np.float32
  np.testing.assert_array_equal(np.round(floats * 255), corruptions.corrupt(images, name, 3, seed=3))


def test_contrast_matches_definition():
  images = _images((8, 8), 2, seed=0)
  x = images / 255.0
  mean = x.mean(axis=(1, 2), keepdims=True)
  expected = np.uint8(np.clip((x - mean) * 0.2 + mean, 0, 1) * 255)  # severity 3; truncated
  np.testing.assert_array_equal(corruptions.corrupt(images, "contrast", 3), expected)


def test_noise_depends_on_seed_and_index():
  image = _images((8, 8), 1, seed=0)
  a, b = corruptions.corrupt(image, "gaussian_noise", 2, seed=0), corruptions.corrupt(image, "gaussian_noise", 2, seed=1)
  c = corruptions.corrupt(image, "gaussian_noise", 2, seed=0, indices=[7])
  assert not np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("name, severity", [("spatter", 1), ("jpeg", 1), ("fog", 0), ("fog", 6)])
def test_unknown_corruption_or_severity_raises(name, severity):
  with pytest.raises(ValueError):
    corruptions.corrupt(_images((8, 8), 1, seed=0), name, severity)


# --- the benchmark's numbers (ood evaluator) ----------------------------------------------------


def test_mce_is_mean_error_or_ce_normalised_by_the_baseline(tmp_path):
  names = corruptions.CORRUPTIONS + ("saturate",)
  rng = np.random.default_rng(0)
  errors = {(n, s): float(rng.uniform(0.1, 0.9)) for n in names for s in range(1, 6)}
  base = {(n, s): float(rng.uniform(0.2, 0.95)) for n in names for s in range(1, 6)}
  plain = ood_eval.summary(errors, names)
  mean_error = {n: np.mean([errors[n, s] for s in range(1, 6)]) for n in names}
  assert plain["corrupt_mce"] == pytest.approx(np.mean([mean_error[n] for n in corruptions.CORRUPTIONS]))
  assert plain["corrupt_top1_saturate"] == pytest.approx(1 - mean_error["saturate"])
  assert plain["corrupt_top1_mean"] == pytest.approx(1 - np.mean(list(errors.values())))
  # ImageNet-C's CE: errors summed over severities over the baseline's; extras not in mCE.
  report = {f"corrupt_top1_{n}_s{s}": 1 - base[n, s] for n in names for s in range(1, 6)}
  (tmp_path / "report.json").write_text(json.dumps(report))
  read = ood_eval.baseline_errors(str(tmp_path / "report.json"), names)
  assert read == pytest.approx(base)
  ce = {n: sum(errors[n, s] for s in range(1, 6)) / sum(base[n, s] for s in range(1, 6)) for n in names}
  normalised = ood_eval.summary(errors, names, read)
  assert normalised["corrupt_ce_fog"] == pytest.approx(ce["fog"])
  assert normalised["corrupt_mce"] == pytest.approx(np.mean([ce[n] for n in corruptions.CORRUPTIONS]))
  assert ood_eval.summary(base, names, read)["corrupt_mce"] == pytest.approx(1.0)


def _ctx(name, val_split, val_len):
  cfg = ml_collections.ConfigDict(dict(data=dict(name=name, val_split=val_split, data_dir="", image_size=32)))
  return types.SimpleNamespace(config=cfg, run=types.SimpleNamespace(
      datasets=types.SimpleNamespace(val=range(val_len))))


@pytest.mark.parametrize("dataset, split", [("cifar10", "test"), ("imagenet2012", "validation")])
def test_prepared_corrupted_sets_read_when_the_dataset_matches(dataset, split):
  with tfds.testing.mock_data(num_examples=6):
    for name in corruptions.CORRUPTIONS + corruptions.EXTRA_CORRUPTIONS:  # tfds knows each name
      got = ood_eval._prepared(_ctx(dataset, split, 6), name, 2, np.array([4, 1]))
      assert got["image"].shape == (2, 32, 32, 3) and got["image"].dtype == np.uint8, name
      assert got["label"].shape == (2,)
    # Another clean split, another dataset, or another size of split: generate instead.
    assert ood_eval._prepared(_ctx(dataset, "train", 6), "fog", 2, np.array([0])) is None
    assert ood_eval._prepared(_ctx("cifar100", "test", 6), "fog", 2, np.array([0])) is None
    assert ood_eval._prepared(_ctx(dataset, split, 7), "fog", 2, np.array([0])) is None


def test_absent_prepared_set_is_generated(tmp_path):
  ctx = _ctx("cifar10", "test", 6)
  ctx.config.data.data_dir = str(tmp_path)
  assert ood_eval._prepared(ctx, "fog", 2, np.array([0])) is None


@pytest.mark.parametrize("key, value, message", [
    ("ood_corruptions", ("fog", "jpeg"), "config.eval.ood_corruptions='jpeg' is not allowed; expected names from gaussian_noise"),
    ("ood_baseline", "/no/such/report.json", "config.eval.ood_baseline='/no/such/report.json' is not allowed; "
     "expected a baseline run's report.json: cannot read"),
])
def test_config_names_bad_corruption_keys(key, value, message):
  cfg = config_lib.base_config()
  cfg.eval[key] = value
  with pytest.raises(config_lib.ConfigError, match=re.escape(message)):
    config_lib.validate(cfg)
