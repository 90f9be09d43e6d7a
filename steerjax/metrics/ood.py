"""Out-of-distribution detection: classifier scores and ROC AUC.

Convention: a score is *higher for in-distribution* inputs, so the AUC is the
probability that a random in-distribution input scores above a random
out-of-distribution one. The scores take class probabilities, so the same code
serves no TTA, image-space TTA and steered TTA (whose outputs are averaged
probabilities, see steerjax.tta).
"""

import numpy as np


def msp_score(probs) -> np.ndarray:
  """Maximum softmax probability (Hendrycks & Gimpel, 2017)."""
  return np.max(np.asarray(probs, np.float64), axis=-1)


def neg_entropy_score(probs) -> np.ndarray:
  """Negative predictive entropy sum_c p_c log p_c: confident predictions score high."""
  p = np.asarray(probs, np.float64)
  return np.sum(p * np.log(np.clip(p, 1e-30, None)), axis=-1)


SCORES = {"msp": msp_score, "neg_entropy": neg_entropy_score}


def _average_ranks(x: np.ndarray) -> np.ndarray:
  """1-based ranks with tied values sharing the mean of their ranks."""
  _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
  starts = np.cumsum(counts) - counts
  return (starts + (counts + 1) / 2)[inverse]


def roc_auc(scores_in, scores_out) -> float:
  """ROC AUC = P(s_in > s_out) + P(s_in == s_out) / 2, from ranks (Mann-Whitney U).

  O((n+m) log(n+m)); equal to counting all (in, out) pairs, ties counted half.
  """
  scores_in = np.asarray(scores_in, np.float64).ravel()
  scores_out = np.asarray(scores_out, np.float64).ravel()
  n_in, n_out = len(scores_in), len(scores_out)
  ranks = _average_ranks(np.concatenate([scores_in, scores_out]))
  u = ranks[:n_in].sum() - n_in * (n_in + 1) / 2
  return float(u / (n_in * n_out))


def ood_auc(probs_in, probs_out, score: str = "msp") -> float:
  """AUC separating in-distribution from OOD class probabilities with a named score."""
  return roc_auc(SCORES[score](probs_in), SCORES[score](probs_out))
