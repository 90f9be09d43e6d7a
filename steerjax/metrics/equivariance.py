"""Equivariance metrics on embeddings (steerjax/design.md §5 and §7).

All functions take arrays of embeddings (and, where needed, a prediction
callable) and return Python floats or dicts of floats.
"""

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from steerjax import augment
from steerjax.metrics.probes import l2_normalize


def steering_error(z_src, z_tgt, z_pred) -> float:
  """E||z_tgt - z_pred||^2 / E||z_tgt - z_src||^2.

  Below 1 the steerer explains the change of the embedding better than
  predicting no change at all; 0 is exact steering.
  """
  return float(steering_error_array(z_src, z_tgt, z_pred))


def steering_error_array(z_src, z_tgt, z_pred) -> jax.Array:
  """`steering_error` as a traceable scalar, for use inside jit (the online monitors)."""
  num = jnp.mean(jnp.sum((z_tgt - z_pred) ** 2, -1))
  den = jnp.mean(jnp.sum((z_tgt - z_src) ** 2, -1))
  return num / den


def augmented_steering(policy, fns, size: int, key) -> Callable:
  """`f(variables, index, image_uint8) -> {z, z_t, z_p, zs, zs_t}` for one batch: the plain
  image's embedding z, its augmented view's z_t, the steered prediction z_p = ρ(g) z, and for
  γ the previous image's embedding zs with the same augmentation's view zs_t. Example `index`
  draws its augmentation from fold_in(key, index), so results do not depend on the batching.
  `fns` is the method's `EvalFunctions` (steer_embed, steer)."""

  def compute(variables, index, image):
    images = image.astype(jnp.float32) / 255.0
    params = jax.vmap(lambda i: policy.sample(jax.random.fold_in(key, i), images.shape[1:3]))(index)
    apply = jax.vmap(lambda im, p: policy.apply(im, p, size))
    embed = lambda x: fns.steer_embed(variables, x)
    z = embed(augment.resize_batch(image, size))
    return {"z": z, "z_t": embed(apply(images, params)),
            "z_p": fns.steer(variables, z, policy.encode(params)),
            "zs": jnp.roll(z, 1, axis=0), "zs_t": embed(apply(jnp.roll(images, 1, axis=0), params))}
  return compute


def steering_cosine(z_tgt, z_pred) -> float:
  """Mean cosine similarity between the steered prediction and the target embedding."""
  return float(jnp.mean(jnp.sum(l2_normalize(z_tgt) * l2_normalize(z_pred), -1)))


def gamma(f_x, f_xp, f_ax, f_axp, eps: float = 1e-12) -> float:
  """The steerability metric of Bhardwaj et al. as restated by CARE (Gupta et al.).

  gamma = E[(||f(a x') - f(a x)||^2 - ||f(x') - f(x)||^2)^2
            / (||f(a x') - f(x')||^2 + ||f(a x) - f(x)||^2)^2]
  for pairs of images (x, x') and one augmentation a applied to both: small when
  `a` preserves distances in embedding space while still moving the embeddings.
  """
  sq = lambda u, v: jnp.sum((u - v) ** 2, -1)
  num = (sq(f_axp, f_ax) - sq(f_xp, f_x)) ** 2
  den = (sq(f_axp, f_xp) + sq(f_ax, f_x)) ** 2
  return float(jnp.mean(num / (den + eps)))


def _retrieval_from_sims(sims, target, ks) -> dict:
  """Rank = 1 + number of candidates strictly more similar than the target (ties favour it)."""
  target_sim = jnp.take_along_axis(sims, target[:, None], axis=-1)
  ranks = 1 + jnp.sum(sims > target_sim, axis=-1)
  out = {"mrr": float(jnp.mean(1.0 / ranks))}
  out.update({f"h@{k}": float(jnp.mean(ranks <= k)) for k in ks})
  return out


def mrr_hits(pred, view_embs, target_view, ks: Sequence[int] = (1, 2, 5, 10)) -> dict:
  """Mean reciprocal rank and hits@k of predictions among candidate views (SIE protocol).

  Args:
    pred: [Q, d] predicted embeddings, e.g. W(g_{0->j}) z(view 0) computed from the
      unnormalised source embedding.
    view_embs: [Q, V, d] the candidates of each query (all views of its object).
    target_view: [Q] int, the index of the true view among the candidates.
    ks: cut-offs for hits@k.

  Both sides are L2-normalised and ranked by cosine. Returns dict(mrr, h@k...).
  """
  sims = jnp.einsum("qd,qvd->qv", l2_normalize(pred), l2_normalize(view_embs))
  return _retrieval_from_sims(sims, jnp.asarray(target_view, jnp.int32), ks)


def sie_retrieval(
    embed_views, transforms, predict_fn: Callable, ks: Sequence[int] = (1, 2, 5, 10)
) -> dict:
  """The whole SIE retrieval protocol: every view j of every object o is a query.

  Args:
    embed_views: [O, V, d] embeddings of all V views of O objects (the space the
      predictor acts on, e.g. the equivariant part).
    transforms: [O, V, k] the transformation from view 0 to view j of object o
      (the identity for j = 0).
    predict_fn: (z [B, d], g [B, k]) -> [B, d], the learnt predictor/steerer.
    ks: cut-offs for hits@k.

  The prediction is made from the unnormalised view-0 embedding, then the
  prediction and all views of the object (view 0 included) are L2-normalised and
  ranked by cosine.
  """
  num_objects, num_views, dim = embed_views.shape
  source = jnp.repeat(embed_views[:, 0], num_views, axis=0)
  pred = predict_fn(source, transforms.reshape(num_objects * num_views, -1))
  pred = l2_normalize(pred.reshape(num_objects, num_views, dim))
  sims = jnp.einsum("ojd,ovd->ojv", pred, l2_normalize(embed_views))
  target = jnp.tile(jnp.arange(num_views), num_objects)
  return _retrieval_from_sims(sims.reshape(num_objects * num_views, num_views), target, ks)


def pre(pred, query_pose_quat, all_embs, all_pose_quat, chunk_size: int = 1024) -> float:
  """Prediction rotation error: mean(1 - <q_query, q_nn>^2) over queries.

  q_nn is the absolute pose of the nearest neighbour (cosine, after L2
  normalisation) of each prediction among `all_embs` (every object; SIE's
  "val-all" uses train and val together). Squaring the inner product of unit
  quaternions makes the error independent of the quaternion sign; it is
  0 for identical rotations and 1 for rotations 180 degrees apart.
  """
  all_embs = l2_normalize(jnp.asarray(all_embs, jnp.float32))
  all_q = l2_normalize(jnp.asarray(all_pose_quat, jnp.float32))
  query_q = l2_normalize(jnp.asarray(query_pose_quat, jnp.float32))
  pred = l2_normalize(jnp.asarray(pred, jnp.float32))
  nearest = jax.jit(lambda p: jnp.argmax(p @ all_embs.T, axis=-1))
  nn_idx = jnp.concatenate([nearest(pred[i : i + chunk_size]) for i in range(0, pred.shape[0], chunk_size)])
  return float(jnp.mean(1.0 - jnp.sum(query_q * all_q[nn_idx], -1) ** 2))


def r2_score(y_true, y_pred) -> float:
  """1 - SS_res / SS_tot with one global mean over all entries (SIE's convention)."""
  y_true = jnp.asarray(y_true, jnp.float32)
  ss_res = jnp.sum((y_true - y_pred) ** 2)
  ss_tot = jnp.sum((y_true - jnp.mean(y_true)) ** 2)
  return float(1.0 - ss_res / ss_tot)


class _MLP(nn.Module):
  hidden: Sequence[int]
  out_dim: int

  @nn.compact
  def __call__(self, x):
    for width in self.hidden:
      x = nn.relu(nn.Dense(width)(x))
    return nn.Dense(self.out_dim)(x)


def regress_r2(
    train_a,
    train_b,
    train_y,
    val_a,
    val_b,
    val_y,
    *,
    hidden: Sequence[int] = (1024, 1024),
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
) -> float:
  """Validation R^2 of an MLP regressing y (e.g. the relative rotation) from [a ; b].

  The MLP (ReLU hidden layers `hidden`, linear output) is trained with MSE and
  Adam on random minibatches for `steps` steps (one jitted scan), as SIE's
  rotation/colour prediction evaluation on pairs of embeddings.
  """
  train_x = jnp.concatenate([jnp.asarray(train_a), jnp.asarray(train_b)], -1).astype(jnp.float32)
  val_x = jnp.concatenate([jnp.asarray(val_a), jnp.asarray(val_b)], -1).astype(jnp.float32)
  train_y = jnp.asarray(train_y, jnp.float32)
  model = _MLP(tuple(hidden), train_y.shape[-1])
  init_key, data_key = jax.random.split(jax.random.key(seed))
  params = model.init(init_key, train_x[:1])
  tx = optax.adam(lr)
  batch_size = min(batch_size, train_x.shape[0])

  def loss_fn(p, x, y):
    return jnp.mean((model.apply(p, x) - y) ** 2)

  @jax.jit
  def train(params, key):
    def step(carry, step_key):
      params, opt_state = carry
      idx = jax.random.choice(step_key, train_x.shape[0], (batch_size,), replace=False)
      grads = jax.grad(loss_fn)(params, train_x[idx], train_y[idx])
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None

    return jax.lax.scan(step, (params, tx.init(params)), jax.random.split(key, steps))[0][0]

  params = train(params, data_key)
  return r2_score(np.asarray(val_y, np.float32), model.apply(params, val_x))
