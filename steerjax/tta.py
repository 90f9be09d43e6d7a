"""Test-time augmentation (TTA) in image space and in embedding space.

Image-space TTA pushes N augmented views of each image through the encoder.
Steered TTA (Bhardwaj et al., 2023) pushes each image through once and
predicts the N view embeddings with the steerer, z_n = rho(g_n) f(x); for a
steerer linear in g (rho(g) z = c(z) + sum_k g_k A_k z) the k products A_k z are
computed once, so N views cost O(N k d) instead of N encoder passes (or N d^2).

Aggregation everywhere: the mean over views of the softmax probabilities
(not of logits), so outputs are class probabilities [B, C] that OOD scores and
accuracies consume directly; `no_tta` gives the single-view baseline in the
same form. All functions are pure and jit-able; callers jit them.
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp

HeadFn = Callable[[jax.Array], jax.Array]


def no_tta(head_fn: HeadFn, z: jax.Array) -> jax.Array:
  """Softmax probabilities [B, C] of the head on the plain embeddings z [B, d]."""
  return jax.nn.softmax(head_fn(z), axis=-1)


def view_probs(head_fn: HeadFn, views: jax.Array) -> jax.Array:
  """[B, N, d] view embeddings -> softmax(head) of each view -> [B, N, C]."""
  b, n, d = views.shape
  logits = head_fn(views.reshape(b * n, d))
  return jax.nn.softmax(logits, axis=-1).reshape(b, n, -1)


def steered_views(
    z: jax.Array,
    g: jax.Array,
    *,
    steer_fn: Callable | None = None,
    basis_fn: Callable | None = None,
    combine_fn: Callable | None = None,
) -> jax.Array:
  """N steered embeddings of each z [B, d] for transformations g [B, N, k] -> [B, N, d].

  Give either `steer_fn(z [B,d], g [B,k]) -> [B,d]` (any steerer; vmapped over
  the N views, costing N applications of rho), or `basis_fn(z) -> [B, k, d]`
  with `combine_fn(z, basis, g) -> [B, d]` (linear-in-g steerers such as
  steerjax.steerers.LinearSteerer / HyperLinear: the basis is computed once and
  only the cheap combination is vmapped over the N views).
  """
  if (steer_fn is None) == (basis_fn is None) or (basis_fn is None) != (combine_fn is None):
    raise ValueError("give either steer_fn, or basis_fn together with combine_fn")
  if steer_fn is not None:
    return jax.vmap(steer_fn, in_axes=(None, 1), out_axes=1)(z, g)
  basis = basis_fn(z)
  return jax.vmap(lambda gn: combine_fn(z, basis, gn), in_axes=1, out_axes=1)(g)


def steered_tta_views(head_fn: HeadFn, z: jax.Array, g: jax.Array, **steerer) -> jax.Array:
  """Softmax of the head on each of the N steered copies of z -> [B, N, C] (OOD scores such as
  agreement across views read these). `steerer`: see `steered_views`."""
  return view_probs(head_fn, steered_views(z, g, **steerer))


def steered_tta(head_fn: HeadFn, z: jax.Array, g: jax.Array, **steerer) -> jax.Array:
  """Steered TTA: mean softmax of the head over the N steered copies of z -> [B, C].

  `steerer` is `steer_fn=...` or `basis_fn=..., combine_fn=...`, see `steered_views`.
  """
  return steered_tta_views(head_fn, z, g, **steerer).mean(1)


def image_tta(encoder_fn, head_fn, images, augment_fn, aug_params, *, batch_size: int) -> jax.Array:
  """Image-space TTA: mean over views of `image_tta_views` -> [B, C]."""
  return image_tta_views(encoder_fn, head_fn, images, augment_fn, aug_params,
                         batch_size=batch_size).mean(1)


def image_tta_views(encoder_fn, head_fn: HeadFn, images, augment_fn, aug_params, *,
                    batch_size: int) -> jax.Array:
  """Image-space TTA: softmax of the head on each encoded view -> [B, N, C]; see `image_views`."""
  return view_probs(head_fn, image_views(encoder_fn, images, augment_fn, aug_params,
                                          batch_size=batch_size))


def image_views(
    encoder_fn: Callable[[jax.Array], jax.Array],
    images: jax.Array,
    augment_fn: Callable[[jax.Array, Any], jax.Array],
    aug_params: Any,
    *,
    batch_size: int,
) -> jax.Array:
  """The embeddings of N augmented views of each image -> [B, N, d] (N encoder passes).

  Args:
    encoder_fn: images [b, H', W', 3] -> embeddings [b, d].
    images: [B, H, W, 3] the source images.
    augment_fn: (one image [H, W, 3], one view's parameters) -> view [H', W', 3].
    aug_params: pytree whose leaves have leading axes [B, N] (the same sampled
      parameters the steered path encodes as g, so the two paths see the same views).
    batch_size: views per encoder call; the B*N views are processed in
      `ceil(B*N / batch_size)` sequential chunks (lax.map) so memory stays bounded.
  """
  b, n = jax.tree.leaves(aug_params)[0].shape[:2]
  total = b * n
  num_chunks = -(-total // batch_size)
  pad = num_chunks * batch_size - total
  flat = jax.tree.map(lambda p: p.reshape(total, *p.shape[2:]), aug_params)
  flat = jax.tree.map(lambda p: jnp.concatenate([p, jnp.repeat(p[-1:], pad, 0)]), flat)
  source = jnp.concatenate([jnp.repeat(jnp.arange(b), n), jnp.full(pad, b - 1)])

  def chunk_embeddings(chunk):
    idx, params = chunk
    return encoder_fn(jax.vmap(augment_fn)(images[idx], params))

  chunks = (source.reshape(num_chunks, batch_size),
            jax.tree.map(lambda p: p.reshape(num_chunks, batch_size, *p.shape[1:]), flat))
  z = jax.lax.map(chunk_embeddings, chunks)
  return z.reshape(num_chunks * batch_size, -1)[:total].reshape(b, n, -1)
