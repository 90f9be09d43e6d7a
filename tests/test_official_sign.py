"""`data.quaternion_sign="official"`: a linear hypernetwork trained on the official SIE code's
quaternions scores in steerjax the MRR the official evaluation computes (written here in NumPy
from SIE's eval_MRR_Hk.py); steerjax's canonical sign would misplace the pairs with w < 0."""

import numpy as np
from scipy.spatial.transform import Rotation

from steerjax import fit_steerer
from steerjax import steerers
from steerjax.data import loader, rotations, sources
from steerjax.metrics import equivariance

OBJECTS, VIEWS, DIM = 40, 50, 6


def _latents(rng):
  """3DIEBench's rotation latents: each angle U(−π/2, π/2), extrinsic xyz; hues U(0, 1)."""
  angles = rng.uniform(-np.pi / 2, np.pi / 2, (OBJECTS, VIEWS, 3))
  return np.concatenate([angles, rng.uniform(0, 1, (OBJECTS, VIEWS, 4))], -1)


def _official_quaternions(latent):
  """SIE's EvalDataset: (R.from_euler(view 0).inv() * R.from_euler(view j)).as_quat()."""
  start = Rotation.from_euler("xyz", np.repeat(latent[:, :1, :3], VIEWS, 1).reshape(-1, 3))
  end = Rotation.from_euler("xyz", latent[:, :, :3].reshape(-1, 3))
  return (start.inv() * end).as_quat().reshape(OBJECTS, VIEWS, 4)


def _official_mrr(weight, embeddings, quats):
  """eval_MRR_Hk.py: W = (weight @ q).view(d, d), out = W z(view 0), L2-normalised; targets
  L2-normalised (+1e-8); rank of view j in argsort(−sims) among the object's views."""
  ranks = []
  targets = embeddings / (np.linalg.norm(embeddings, axis=-1, keepdims=True) + 1e-8)
  for o in range(OBJECTS):
    for j in range(VIEWS):
      out = (weight @ quats[o, j]).reshape(DIM, DIM) @ embeddings[o, 0]
      out = out / np.linalg.norm(out)
      order = np.argsort(-(targets[o] @ out))
      ranks.append(np.argwhere(order == j)[0, 0] + 1)
  return float(np.mean(1.0 / np.asarray(ranks)))


def test_official_sign_gives_the_official_mrr_of_an_officially_trained_predictor():
  rng = np.random.default_rng(0)
  latent = _latents(rng)
  official_q = _official_quaternions(latent)
  # Views whose equivariant embeddings follow a linear hypernetwork of the *official* quaternion.
  true_w = rng.normal(size=(DIM * DIM, 4))
  z0 = rng.normal(size=(OBJECTS, DIM))
  w_of = lambda q: (q @ true_w.T).reshape(*q.shape[:-1], DIM, DIM)
  embeddings = np.einsum("ovij,oj->ovi", w_of(official_q), z0) + 0.3 * rng.normal(size=(OBJECTS, VIEWS, DIM))
  # "Training" by the official code: least squares on its (official-sign) quaternions.
  normal = fit_steerer.NormalEquations("hyper_linear")
  normal.add(np.repeat(embeddings[:, :1], VIEWS, 1).reshape(-1, DIM).astype(np.float32),
             embeddings.reshape(-1, DIM).astype(np.float32), official_q.reshape(-1, 4).astype(np.float32))
  kernel = np.asarray(normal.solve(0.0)["params"]["kernel"])
  weight = kernel.T  # the torch checkpoint's hypernet weight [d·d, 4]; steerjax: kernel = weight.T

  module = steerers.get_steerer("hyper_linear", DIM, 4)
  predict = lambda z, g: module.apply({"params": {"kernel": kernel}}, z, g)
  expected = _official_mrr(weight, embeddings, official_q)
  scores = {}
  for sign in rotations.SIGNS:  # as the sie_retrieval evaluator makes g from data.quaternion_sign
    g = rotations.relative_transform(np.repeat(latent[:, :1], VIEWS, 1), latent, sign)[..., :4]
    scores[sign] = equivariance.sie_retrieval(embeddings.astype(np.float32), g, predict)["mrr"]
  assert abs(scores["official"] - expected) < 1e-6, (scores, expected)
  assert (official_q[..., 3] < 0).any() and scores["canonical"] < expected - 0.01


def test_loader_pairs_carry_the_configured_sign():
  rng = np.random.default_rng(1)
  latent = _latents(rng).reshape(-1, 7).astype(np.float32)
  n = len(latent)
  src = sources.ArraySource(dict(
      image=np.zeros((n, 2, 2, 3), np.uint8), label=np.zeros(n, np.int32), latent=latent,
      object_id=np.repeat(np.arange(OBJECTS), VIEWS).astype(np.int32),
      view_id=np.tile(np.arange(VIEWS), OBJECTS).astype(np.int32)))
  ld = loader.Loader(src, 32, 0, pairs=True, process_index=0, process_count=1, quaternion_sign="official")
  batch = ld.batch(0)
  official = (Rotation.from_euler("xyz", batch["latent"][:, :3]).inv()
              * Rotation.from_euler("xyz", batch["latent2"][:, :3])).as_quat()
  np.testing.assert_allclose(batch["transform"][:, :4], official, atol=1e-6)
