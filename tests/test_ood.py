"""ROC AUC against a brute-force pair count; scores."""

import numpy as np
import pytest

from steerjax.metrics import ood


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


def test_knn_similarity_is_the_kth_largest_cosine_and_blind_to_the_norm():
  rng = np.random.default_rng(0)
  bank, views = rng.normal(size=(300, 16)), rng.normal(size=(7, 3, 16))
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  expected = np.sort(unit(views) @ unit(bank).T, axis=-1)[..., -5]
  got = ood.knn_similarities(views, bank, k=5, chunk=4)  # chunks of 4 queries: padding path
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
  scaled = views * rng.uniform(0.1, 10, size=(7, 3, 1))
  np.testing.assert_allclose(ood.knn_similarities(scaled, bank, k=5), expected, rtol=1e-5, atol=1e-6)
  # A bank clustered around one direction: isotropic points score lower than the bank's own kind.
  centre = 4 * unit(np.ones(16))
  bank, inliers, outliers = (rng.normal(size=(300, 16)) + centre, rng.normal(size=(50, 16)) + centre,
                             rng.normal(size=(50, 16)))
  auc = ood.roc_auc(ood.knn_similarities(inliers, bank), ood.knn_similarities(outliers, bank))
  assert auc > 0.9
