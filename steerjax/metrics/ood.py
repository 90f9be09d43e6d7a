"""Out-of-distribution detection: classifier scores and ROC AUC.

Convention: a score is *higher for in-distribution* inputs, so the AUC is the
probability that a random in-distribution input scores above a random
out-of-distribution one. The classifier scores (`SCORES`) take class probabilities, so the
same code serves no TTA, image-space TTA and steered TTA. Scores read per-view probabilities
[B, N, C] (N = 1 without TTA; see `steerjax.tta.*_views`); [B, C] counts as one view.

`knn_similarities` is the feature-space alternative (deep nearest neighbours, Sun et al.,
2022): it reads L2-normalised embeddings, so it is blind to their norm. Classifier scores are
not: a linear head's logits grow with the feature norm, and corruptions such as noise, snow
or brightness *raise* a weakly trained encoder's feature norm, which makes its softmax more
confident on corrupted images than on clean ones (AUC below 0.5).
"""

import functools

import jax
import numpy as np

from steerjax.metrics import probes


def _views(probs) -> np.ndarray:
  p = np.asarray(probs, np.float64)
  return p[:, None] if p.ndim == 2 else p


def msp_score(probs) -> np.ndarray:
  """Maximum of the view-averaged softmax probability (Hendrycks & Gimpel, 2017)."""
  return np.max(_views(probs).mean(1), axis=-1)


def neg_entropy_score(probs) -> np.ndarray:
  """Negative entropy sum_c p_c log p_c of the view-averaged prediction: confident scores high."""
  p = _views(probs).mean(1)
  return np.sum(p * np.log(np.clip(p, 1e-30, None)), axis=-1)


def agreement_score(probs) -> np.ndarray:
  """Fraction of the N views whose top class is the averaged prediction's top class: views of
  an in-distribution image tend to agree (constant 1 for a single view)."""
  p = _views(probs)
  return np.mean(p.argmax(-1) == p.mean(1).argmax(-1)[:, None], axis=1)


SCORES = {"msp": msp_score, "neg_entropy": neg_entropy_score, "agreement": agreement_score}


@functools.partial(jax.jit, static_argnames="k")
def _kth_similarity(queries, bank, k: int):
  sims, _ = probes.knn_neighbours(probes.l2_normalize(queries), probes.l2_normalize(bank), k=k)
  return sims[:, -1]


def knn_similarities(view_features, bank, k: int = 50, chunk: int = 4096) -> np.ndarray:
  """Per view, the cosine similarity of the embedding to its k-th most similar bank embedding
  (in-distribution training features): [B, N] for view features [B, N, d] (or [B] for [B, d]).
  Its mean over views is the deep-nearest-neighbour score (Sun et al., 2022; k = 50 is their
  CIFAR-10 choice); queries go `chunk` at a time, the bank in `probes.knn_neighbours` chunks."""
  z = np.asarray(view_features, np.float32)
  flat = z.reshape(-1, z.shape[-1])
  n, chunk = len(flat), min(chunk, len(flat))
  flat = np.concatenate([flat, np.zeros((-n % chunk, flat.shape[1]), np.float32)])  # one shape
  bank = np.asarray(bank, np.float32)
  sims = [np.asarray(_kth_similarity(flat[i:i + chunk], bank, min(k, len(bank))))
          for i in range(0, len(flat), chunk)]
  return np.concatenate(sims)[:n].reshape(z.shape[:-1])


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
