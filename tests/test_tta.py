"""Steered and image-space TTA against explicit per-view computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from steerjax import steerers, tta

B, N, K, D, C = 3, 5, 4, 6, 7


def _setup(seed=0):
  rng = np.random.default_rng(seed)
  z = rng.normal(size=(B, D)).astype(np.float32)
  g = rng.normal(size=(B, N, K)).astype(np.float32)
  w = rng.normal(size=(D, C)).astype(np.float32)
  head = lambda e: e @ w
  return z, g, w, head


def _explicit_probs(z, g, w, rho):
  probs = np.zeros((B, C))
  for b in range(B):
    for n in range(N):
      logits = (rho(g[b, n]) @ z[b]) @ w
      e = np.exp(logits - logits.max())
      probs[b] += e / e.sum() / N
  return probs


@pytest.mark.parametrize("cls", [steerers.LinearSteerer, steerers.HyperLinear])
def test_steered_tta_equals_explicit_matrix_products(cls):
  z, g, w, head = _setup()
  steerer = cls(dim=D, g_dim=K)
  variables = steerer.init(jax.random.key(0), z, g[:, 0])
  variables = jax.tree.map(lambda p: jax.random.normal(jax.random.key(1), p.shape) * 0.3, variables)
  rho = lambda gn: np.asarray(steerer.apply(variables, jnp.asarray(gn), method="matrices"))
  expected = _explicit_probs(z, g, w, rho)
  basis_fn = lambda zz: steerer.apply(variables, zz, method="basis_apply")
  combine_fn = lambda zz, basis, gg: steerer.apply(variables, zz, basis, gg, method="combine")
  steer_fn = lambda zz, gg: steerer.apply(variables, zz, gg)
  fast = jax.jit(lambda z, g: tta.steered_tta(head, z, g, basis_fn=basis_fn, combine_fn=combine_fn))(z, g)
  generic = tta.steered_tta(head, z, g, steer_fn=steer_fn)
  np.testing.assert_allclose(fast, expected, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(generic, expected, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(fast.sum(-1), 1.0, rtol=1e-5)


def test_steered_views_needs_one_steerer():
  z, g, _, _ = _setup()
  with pytest.raises(ValueError):
    tta.steered_views(z, g)
  with pytest.raises(ValueError):
    tta.steered_views(z, g, basis_fn=lambda zz: zz)


def test_no_tta_is_softmax_of_head():
  z, _, w, head = _setup()
  np.testing.assert_allclose(tta.no_tta(head, z), jax.nn.softmax(z @ w), rtol=1e-6)


def test_image_tta_matches_loop_and_steered_tta_for_an_exactly_steerable_encoder():
  """Images x in R^{4x4x1}, augmentation T(g) x = x + sum_k g_k B_k x (linear), encoder f(x) = M vec(x).

  Then f(T(g) x) = rho(g) f(x) with rho(g) = I + sum_k g_k M B_k M^+, so image-space and
  steered TTA must agree; batch_size 4 does not divide B*N = 15, exercising the padding.
  """
  rng = np.random.default_rng(0)
  n_pix = 16
  images = rng.normal(size=(B, 4, 4, 1)).astype(np.float32)
  b_maps = (rng.normal(size=(K, n_pix, n_pix)) * 0.2).astype(np.float32)
  m = (rng.normal(size=(n_pix, n_pix)) + 4 * np.eye(n_pix)).astype(np.float32)
  w = rng.normal(size=(n_pix, C)).astype(np.float32)
  g = rng.normal(size=(B, N, K)).astype(np.float32)
  encoder = lambda x: x.reshape(x.shape[0], -1) @ m.T
  head = lambda e: e @ w
  augment = lambda img, gn: (img.reshape(-1) + jnp.einsum("k,kij,j->i", gn, b_maps, img.reshape(-1))).reshape(4, 4, 1)
  image_probs = jax.jit(lambda im, gg: tta.image_tta(encoder, head, im, augment, gg, batch_size=4))(images, g)
  loop = np.stack([np.mean([jax.nn.softmax(head(encoder(augment(images[b], g[b, n])[None])))[0]
                            for n in range(N)], 0) for b in range(B)])
  np.testing.assert_allclose(image_probs, loop, rtol=1e-4, atol=1e-6)
  generators = np.einsum("ij,kjl,lm->kim", m, b_maps, np.linalg.inv(m))
  steerer = steerers.LinearSteerer(dim=n_pix, g_dim=K)
  variables = {"params": {"generators": jnp.asarray(generators, jnp.float32)}}
  steered = tta.steered_tta(
      head, encoder(images), g,
      basis_fn=lambda zz: steerer.apply(variables, zz, method="basis_apply"),
      combine_fn=lambda zz, basis, gg: steerer.apply(variables, zz, basis, gg, method="combine"))
  np.testing.assert_allclose(steered, image_probs, rtol=1e-3, atol=1e-5)


def test_accuracy_by_views_averages_the_first_n_views():
  from steerjax.evaluators import tta as tta_eval  # pylint: disable=g-import-not-at-top
  # Image 0: view 1 says class 1 (wrong), views 1-2 tie-break to 0 by their mean, all 3 say 0.
  image = np.array([[[0.4, 0.6], [0.9, 0.1], [0.8, 0.2]],
                    [[0.1, 0.9], [0.2, 0.8], [0.3, 0.7]]])
  probs = {"none": image[:, :1], "image": image}
  views, curves = tta_eval.accuracy_by_views(probs, np.array([0, 1]))
  assert views == [1, 2, 3]
  assert curves == {"none": [0.5, 0.5, 0.5], "image": [0.5, 1.0, 1.0]}


def test_ood_auc_by_views_scores_the_mean_of_the_first_n_views():
  from steerjax.evaluators import ood as ood_eval  # pylint: disable=g-import-not-at-top
  # Max softmax of the mean view. One view: clean 0.9, 0.6 vs corrupted 0.8, 0.55 -> 3 of 4
  # pairs ordered; two views: clean 0.7, 0.7 vs corrupted 0.65, 0.55 -> all 4.
  clean = np.array([[[0.9, 0.1], [0.5, 0.5]], [[0.6, 0.4], [0.8, 0.2]]])
  corrupted = np.array([[[0.8, 0.2], [0.5, 0.5]], [[0.55, 0.45], [0.55, 0.45]]])
  entry = lambda p: {"none": {"probs": p[:, :1]}, "image": {"probs": p}}
  views, aucs = ood_eval.auc_by_views(entry(clean), entry(corrupted))
  assert views == [1, 2]
  np.testing.assert_allclose(aucs["image"], [0.75, 1.0])
  np.testing.assert_allclose(aucs["none"], [0.75, 0.75])
  # The kNN score averages per-view similarities: one view 0.9, 0.5 vs 0.8, 0.4 -> 3 of 4 pairs
  # ordered; two views 0.7, 0.65 vs 0.55, 0.5 -> all 4.
  knn = lambda sims: {"image": {"probs": clean, "knn": np.array(sims)}}
  views, aucs = ood_eval.auc_by_views(knn([[0.9, 0.5], [0.5, 0.8]]), knn([[0.8, 0.3], [0.4, 0.6]]),
                                      "knn")
  np.testing.assert_allclose(aucs["image"], [0.75, 1.0])
