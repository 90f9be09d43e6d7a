"""Frozen-feature probes: a linear classifier and weighted kNN.

Features are computed once and cached in memory; everything here is a pure
function of arrays so the trainer and the evaluate CLI can call it on any
encoder's features. The whole probe training is one jitted program (a scan over
epochs of a scan over minibatches), so 90 epochs on cached features are cheap.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

Head = dict[str, Any]


def probe_logits(head: Head, x: jax.Array) -> jax.Array:
  """Logits of a linear head returned by `linear_probe` (standardisation included)."""
  return ((x - head["mean"]) / head["std"]) @ head["w"] + head["b"]


def topk_accuracy(logits: jax.Array, labels: jax.Array, k: int) -> float:
  """Fraction of rows whose label is among the k largest logits (k capped at the class count)."""
  k = min(k, logits.shape[-1])
  _, top = jax.lax.top_k(logits, k)
  return float(jnp.mean(jnp.any(top == labels[:, None], axis=-1)))


def _cross_entropy(head, x, y, weight_decay):
  logits = probe_logits(head, x)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
  return loss + 0.5 * weight_decay * jnp.sum(head["w"] ** 2)


def _train_minibatch(head, x, y, *, optimizer, epochs, batch_size, lr, weight_decay, key):
  """SGD/Adam over shuffled minibatches (remainder dropped each epoch), cosine lr to 0."""
  n = x.shape[0]
  batch_size = min(batch_size, n)
  steps_per_epoch = n // batch_size
  schedule = optax.cosine_decay_schedule(lr, epochs * steps_per_epoch)
  if optimizer == "sgd":
    tx = optax.sgd(schedule, momentum=0.9, nesterov=True)
  else:
    tx = optax.adam(schedule)
  trainable = {k: head[k] for k in ("w", "b")}
  frozen = {k: head[k] for k in ("mean", "std")}
  loss_grad = jax.grad(lambda p, xb, yb: _cross_entropy({**p, **frozen}, xb, yb, weight_decay))

  def step(carry, idx):
    params, opt_state = carry
    updates, opt_state = tx.update(loss_grad(params, x[idx], y[idx]), opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), None

  def epoch(carry, epoch_key):
    order = jax.random.permutation(epoch_key, n)[: steps_per_epoch * batch_size]
    return jax.lax.scan(step, carry, order.reshape(steps_per_epoch, batch_size))[0], None

  carry = (trainable, tx.init(trainable))
  (trainable, _), _ = jax.lax.scan(epoch, carry, jax.random.split(key, epochs))
  return {**trainable, **frozen}


def _train_lbfgs(head, x, y, *, epochs, weight_decay):
  """Full-batch L-BFGS with zoom line search; `epochs` is the iteration count."""
  trainable = {k: head[k] for k in ("w", "b")}
  frozen = {k: head[k] for k in ("mean", "std")}
  loss = lambda p: _cross_entropy({**p, **frozen}, x, y, weight_decay)
  tx = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(loss)

  def step(carry, _):
    params, state = carry
    value, grad = value_and_grad(params, state=state)
    updates, state = tx.update(grad, state, params, value=value, grad=grad, value_fn=loss)
    return (optax.apply_updates(params, updates), state), None

  (trainable, _), _ = jax.lax.scan(step, (trainable, tx.init(trainable)), None, length=epochs)
  return {**trainable, **frozen}


def linear_probe(
    train_x,
    train_y,
    val_x,
    val_y,
    num_classes: int,
    *,
    epochs: int = 90,
    batch_size: int = 256,
    lr: float = 0.2,
    weight_decay: float = 0.0,
    optimizer: str = "sgd",
    standardize: bool = True,
    seed: int = 0,
) -> dict:
  """Trains a linear softmax classifier on frozen features; returns top-1/top-5 and the head.

  The defaults are the EquiMod linear-evaluation protocol: 90 epochs of SGD with
  Nesterov momentum 0.9, lr 0.2 on a cosine schedule to 0, batch 256.
  `optimizer="adam"` uses the same loop with Adam; `optimizer="lbfgs"` is the fast
  full-batch alternative (then `epochs` counts L-BFGS iterations, ~100 are
  plenty; `batch_size`/`lr` are unused). Weight decay is an L2 term
  `weight_decay/2 * ||W||^2` in the loss (bias excluded), i.e. coupled decay.
  With `standardize` each feature is centred and scaled by its training-set
  mean and std; the statistics are stored in the head so `probe_logits(head, x)`
  applies them (TTA reuses the head on steered embeddings).

  Returns:
    dict(top1, top5, head) with accuracies as fractions in [0, 1] on the
    validation set and head = dict(w [d, C], b [C], mean [d], std [d]).
  """
  train_x = jnp.asarray(train_x, jnp.float32)
  val_x = jnp.asarray(val_x, jnp.float32)
  train_y = jnp.asarray(train_y, jnp.int32)
  val_y = jnp.asarray(val_y, jnp.int32)
  dim = train_x.shape[1]
  if standardize:
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
  else:
    mean, std = jnp.zeros(dim), jnp.ones(dim)
  head = dict(w=jnp.zeros((dim, num_classes)), b=jnp.zeros(num_classes), mean=mean, std=std)
  if optimizer in ("sgd", "adam"):
    train = jax.jit(
        lambda h, x, y, k: _train_minibatch(
            h, x, y, optimizer=optimizer, epochs=epochs, batch_size=batch_size, lr=lr,
            weight_decay=weight_decay, key=k))
    head = train(head, train_x, train_y, jax.random.key(seed))
  elif optimizer == "lbfgs":
    head = jax.jit(lambda h, x, y: _train_lbfgs(h, x, y, epochs=epochs, weight_decay=weight_decay))(
        head, train_x, train_y)
  else:
    raise ValueError(f"unknown optimizer {optimizer!r}; use 'sgd', 'adam' or 'lbfgs'")
  logits = probe_logits(head, val_x)
  return dict(top1=topk_accuracy(logits, val_y, 1), top5=topk_accuracy(logits, val_y, 5), head=head)


def l2_normalize(x: jax.Array, axis: int = -1) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def knn_class_scores(queries, bank, bank_labels, num_classes: int, *, k: int = 20,
                     temperature: float = 0.07):
  """[Q, C] summed votes exp(sim / temperature) of each query's k most cosine-similar bank
  points (queries and bank L2-normalised): the weighted kNN classifier, jittable."""
  sims, idx = jax.lax.top_k(queries @ bank.T, min(k, bank.shape[0]))
  votes = jax.nn.one_hot(bank_labels[idx], num_classes) * jnp.exp(sims / temperature)[..., None]
  return votes.sum(1)


def knn_accuracy(
    train_x,
    train_y,
    val_x,
    val_y,
    num_classes: int,
    *,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> dict:
  """Weighted cosine kNN classification (InstDisc / DINO protocol).

  Features are L2-normalised; each validation point takes its k most cosine-similar
  training points, each votes for its label with weight exp(sim / temperature),
  and the class scores are the summed votes. Validation points are processed in
  chunks of `chunk_size` so the similarity matrix never exceeds chunk x N_train.

  Returns:
    dict(top1, top5) as fractions in [0, 1].
  """
  train_x = l2_normalize(jnp.asarray(train_x, jnp.float32))
  train_y = jnp.asarray(train_y, jnp.int32)
  val_x = l2_normalize(jnp.asarray(val_x, jnp.float32))
  class_scores = jax.jit(lambda queries: knn_class_scores(
      queries, train_x, train_y, num_classes, k=k, temperature=temperature))

  scores = np.concatenate([
      np.asarray(class_scores(val_x[i : i + chunk_size])) for i in range(0, val_x.shape[0], chunk_size)
  ])
  labels = jnp.asarray(val_y, jnp.int32)
  return dict(top1=topk_accuracy(scores, labels, 1), top5=topk_accuracy(scores, labels, 5))
