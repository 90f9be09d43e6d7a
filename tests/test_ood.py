"""ROC AUC against a brute-force pair count; scores; corruptions."""

import numpy as np
import pytest

from steerjax.metrics import corruptions, ood


def _pair_count_auc(s_in, s_out):
  diff = np.asarray(s_in)[:, None] - np.asarray(s_out)[None, :]
  return np.mean((diff > 0) + 0.5 * (diff == 0))


@pytest.mark.parametrize("seed", range(4))
def test_auc_equals_brute_force_pair_count_with_ties(seed):
  rng = np.random.default_rng(seed)
  s_in = rng.integers(0, 6, 37)  # small integer range: many ties
  s_out = rng.integers(0, 5, 23)
  assert ood.roc_auc(s_in, s_out) == pytest.approx(_pair_count_auc(s_in, s_out), abs=1e-12)
  s_in, s_out = rng.normal(size=50), rng.normal(size=40) - 0.5
  assert ood.roc_auc(s_in, s_out) == pytest.approx(_pair_count_auc(s_in, s_out), abs=1e-12)


def test_auc_extremes():
  assert ood.roc_auc([2, 3, 4], [0, 1]) == 1.0
  assert ood.roc_auc([0, 1], [2, 3, 4]) == 0.0
  assert ood.roc_auc([1, 1], [1, 1, 1]) == 0.5


def test_scores_rank_confident_predictions_higher():
  confident = np.array([[0.97, 0.01, 0.02]])
  uniform = np.full((1, 3), 1 / 3)
  assert ood.msp_score(confident)[0] == pytest.approx(0.97)
  assert ood.neg_entropy_score(uniform)[0] == pytest.approx(-np.log(3))
  for score in ("msp", "neg_entropy"):
    assert ood.ood_auc(np.repeat(confident, 4, 0), np.repeat(uniform, 3, 0), score) == 1.0


def test_agreement_is_the_share_of_views_voting_for_the_averaged_class():
  views = np.array([[[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.7, 0.3]]])  # mean favours class 0
  assert ood.agreement_score(views)[0] == pytest.approx(0.75)
  assert ood.agreement_score(views[:, :1, :].squeeze(1))[0] == 1.0


@pytest.fixture(scope="module")
def images():
  rng = np.random.default_rng(0)
  base = rng.integers(40, 216, (2, 1, 1, 3))
  texture = rng.integers(-40, 40, (2, 32, 32, 3))
  return np.clip(base + texture, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", corruptions.CORRUPTIONS)
def test_corruptions_shape_dtype_determinism_and_severity(name, images):
  errors = []
  for severity in range(1, 6):
    out = corruptions.corrupt(images, name, severity, seed=3)
    assert out.shape == images.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, corruptions.corrupt(images, name, severity, seed=3))
    errors.append(np.mean((out.astype(float) - images) ** 2))
  assert errors[-1] > 0
  if name not in ("saturate",):  # saturate's constants first desaturate, then oversaturate
    assert errors[-1] >= errors[0]
  floats = corruptions.corrupt(images / 255.0, name, 3, seed=3)
  assert floats.dtype == np.float32 and 0 <= floats.min() and floats.max() <= 1


def test_contrast_matches_definition(images):
  x = images / 255.0
  mean = x.mean(axis=(1, 2), keepdims=True)
  expected = np.clip((x - mean) * 0.4 + mean, 0, 1)
  np.testing.assert_allclose(corruptions.corrupt(x, "contrast", 3), expected, atol=1e-6)


def test_unknown_corruption_raises(images):
  with pytest.raises(ValueError):
    corruptions.corrupt(images, "snow", 1)
