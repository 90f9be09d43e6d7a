"""Frozen-feature probes: a linear classifier and weighted kNN, at the size of the features.

Everything here is a pure function of arrays (the trainer, the evaluators and the API call it on
any encoder's features). The features stay on the host: the linear probe sends the devices
chunks of shuffled minibatches, each minibatch sharded over the local devices (data parallel,
gradients reduced by XLA), so device memory is one chunk and host memory the features plus one
chunk. kNN scans the bank in chunks, so no N_train x N_val similarity matrix exists.
"""

import itertools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

Head = dict[str, Any]

# Named linear-evaluation protocols (`eval.probe_protocol`); "fast" is the eval.probe_* keys.
PROTOCOLS = {
    # EquiMod's linear evaluation (steerjax/design.md): 90 epochs, SGD Nesterov 0.9, lr 0.2 on a
    # cosine schedule to 0, batch 256.
    "equimod": dict(optimizer="sgd", epochs=90, lr=0.2, batch_size=256, weight_decay=0.0),
}
CHUNK_BYTES = 64 * 2**20  # minibatch features sent to the devices per jitted call


def probe_logits(head: Head, x: jax.Array) -> jax.Array:
  """Logits of a linear head returned by `linear_probe` (standardisation included)."""
  return ((x - head["mean"]) / head["std"]) @ head["w"] + head["b"]


def topk_accuracy(logits: jax.Array, labels: jax.Array, k: int) -> float:
  """Fraction of rows whose label is among the k largest logits (k capped at the class count)."""
  k = min(k, logits.shape[-1])
  _, top = jax.lax.top_k(logits, k)
  return float(jnp.mean(jnp.any(top == labels[:, None], axis=-1)))


def _loss(params, frozen, x, y, weight, weight_decay):
  """Cross-entropy summed with per-row weights (0 for padding rows) over the real row count."""
  logits = probe_logits({**params, **frozen}, x)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
  return jnp.sum(weight * ce) / jnp.sum(weight) + 0.5 * weight_decay * jnp.sum(params["w"] ** 2)


def _moments(x: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
  """Per-feature mean and std (float64 accumulation, two passes, in row chunks: no copy of x)."""
  n = len(x)
  mean = sum(x[i:i + chunk].sum(0, dtype=np.float64) for i in range(0, n, chunk)) / n
  var = sum(((x[i:i + chunk] - mean) ** 2).sum(0) for i in range(0, n, chunk)) / n
  return mean.astype(np.float32), np.sqrt(var).astype(np.float32)


def _train_minibatch(head, x, y, *, optimizer, epochs, batch_size, lr, weight_decay, seed,
                     devices):
  """SGD-Nesterov/Adam over shuffled minibatches (remainder dropped each epoch), cosine lr to 0.

  The minibatch order is a NumPy permutation per epoch and each minibatch's gradient is its mean
  over the whole minibatch, so the result does not depend on the number of devices. Minibatches
  are padded with weight-0 rows to a multiple of the device count and sent about `CHUNK_BYTES`
  of features at a time ([steps, batch, d], batch axis sharded), one jitted scan per chunk.
  """
  n, dim = x.shape
  batch_size = min(batch_size, n)
  steps_per_epoch = n // batch_size
  total = epochs * steps_per_epoch
  schedule = optax.cosine_decay_schedule(lr, total)
  if optimizer == "sgd":
    tx = optax.sgd(schedule, momentum=0.9, nesterov=True)
  else:
    tx = optax.adam(schedule)
  mesh = Mesh(np.array(devices), ("data",))
  rows, whole = NamedSharding(mesh, P(None, "data")), NamedSharding(mesh, P())
  padded = -(-batch_size // len(devices)) * len(devices)
  frozen = {k: head[k] for k in ("mean", "std")}
  params = {k: head[k] for k in ("w", "b")}
  grad = jax.grad(_loss)

  def run_steps(carry, frozen, xs, ys, ws):
    def step(carry, batch):
      params, opt_state = carry
      updates, opt_state = tx.update(grad(params, frozen, *batch, weight_decay), opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None
    return jax.lax.scan(step, carry, (xs, ys, ws))[0]

  run = jax.jit(run_steps, in_shardings=(whole, whole, rows, rows, rows), out_shardings=whole)
  chunk = max(1, min(total, CHUNK_BYTES // (padded * dim * 4)))
  order = _minibatches(n, batch_size, epochs, seed)
  weight = np.concatenate([np.ones(batch_size, np.float32),
                           np.zeros(padded - batch_size, np.float32)])
  carry = jax.device_put((params, tx.init(params)), whole)
  frozen = jax.device_put(frozen, whole)
  for start in range(0, total, chunk):
    idx = np.stack(list(itertools.islice(order, chunk)))
    idx = np.concatenate([idx, np.repeat(idx[:, :1], padded - batch_size, 1)], 1)
    ws = np.tile(weight, (len(idx), 1))
    carry = run(carry, frozen, *(jax.device_put(a, rows) for a in (x[idx], y[idx], ws)))
  return {**jax.device_get(carry[0]), **jax.device_get(frozen)}


def _minibatches(n: int, batch_size: int, epochs: int, seed: int):
  """Row indices of each minibatch, epoch after epoch (one seeded permutation per epoch, its
  remainder dropped), made one epoch at a time."""
  rng = np.random.default_rng(seed)
  for _ in range(epochs):
    yield from rng.permutation(n)[: n // batch_size * batch_size].reshape(-1, batch_size)


def _train_lbfgs(head, x, y, *, epochs, weight_decay):
  """Full-batch L-BFGS with zoom line search on one device; `epochs` is the iteration count."""
  params = {k: head[k] for k in ("w", "b")}
  frozen = {k: head[k] for k in ("mean", "std")}
  weight = jnp.ones(len(y))
  loss = lambda p: _loss(p, frozen, x, y, weight, weight_decay)
  tx = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(loss)

  def step(carry, _):
    params, state = carry
    value, grad = value_and_grad(params, state=state)
    updates, state = tx.update(grad, state, params, value=value, grad=grad, value_fn=loss)
    return (optax.apply_updates(params, updates), state), None

  (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=epochs)
  return {**params, **frozen}


def _chunked_topk(head: Head, x: np.ndarray, y: np.ndarray, chunk: int = 8192) -> tuple[float, float]:
  """Top-1 and top-5 accuracy of the head on x, in row chunks."""
  hits = jax.jit(lambda h, xb, yb: jnp.stack([
      jnp.sum(jnp.any(jax.lax.top_k(probe_logits(h, xb), min(k, h["b"].shape[0]))[1] == yb[:, None],
                      -1)) for k in (1, 5)]))
  total = sum(np.asarray(hits(head, x[i:i + chunk], y[i:i + chunk])) for i in range(0, len(x), chunk))
  return float(total[0] / len(x)), float(total[1] / len(x))


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
    devices=None,
) -> dict:
  """Trains a linear softmax classifier on frozen features; returns top-1/top-5 and the head.

  The defaults are the EquiMod linear-evaluation protocol (`PROTOCOLS["equimod"]`).
  `optimizer="adam"` uses the same loop with Adam; both train data-parallel over `devices`
  (default: this process's local devices) with the same result for any device count.
  `optimizer="lbfgs"` is the fast full-batch alternative on one device (then `epochs` counts
  L-BFGS iterations, ~100 are plenty; `batch_size`/`lr` are unused). Weight decay is an L2 term
  `weight_decay/2 * ||W||^2` in the loss (bias excluded), i.e. coupled decay.
  With `standardize` each feature is centred and scaled by its training-set
  mean and std; the statistics are stored in the head so `probe_logits(head, x)`
  applies them (TTA reuses the head on steered embeddings).

  Returns:
    dict(top1, top5, head) with accuracies as fractions in [0, 1] on the validation set and
    head = dict(w [d, C], b [C], mean [d], std [d]) as host (NumPy) arrays.
  """
  train_x, val_x = np.asarray(train_x, np.float32), np.asarray(val_x, np.float32)
  train_y, val_y = np.asarray(train_y, np.int32), np.asarray(val_y, np.int32)
  dim = train_x.shape[1]
  if standardize:
    mean, std = _moments(train_x)
    std = std + np.float32(1e-6)
  else:
    mean, std = np.zeros(dim, np.float32), np.ones(dim, np.float32)
  head = dict(w=np.zeros((dim, num_classes), np.float32), b=np.zeros(num_classes, np.float32),
              mean=mean, std=std)
  if optimizer in ("sgd", "adam"):
    head = _train_minibatch(head, train_x, train_y, optimizer=optimizer, epochs=epochs,
                            batch_size=batch_size, lr=lr, weight_decay=weight_decay, seed=seed,
                            devices=list(devices or jax.local_devices()))
  elif optimizer == "lbfgs":
    head = jax.jit(lambda h, x, y: _train_lbfgs(h, x, y, epochs=epochs, weight_decay=weight_decay))(
        head, train_x, train_y)
  else:
    raise ValueError(f"unknown optimizer {optimizer!r}; use 'sgd', 'adam' or 'lbfgs'")
  head = {k: np.asarray(v) for k, v in head.items()}
  top1, top5 = _chunked_topk(head, val_x, val_y)
  return dict(top1=top1, top5=top5, head=head)


def ridge_r2(train_x, train_y, val_x, val_y, *, ridge: float = 1e-2) -> np.ndarray:
  """Per-target validation R² of a ridge regression y ≈ x W + b fitted on train: [T].

  Features are standardised with the train statistics; W minimises the mean squared error plus
  `ridge`·‖W‖² (closed form, float64). R² = 1 − SSE / Σ (y − mean of train y)², so a regressor
  no better than the train mean scores ≤ 0.
  """
  mean, std = _moments(np.asarray(train_x, np.float32))
  scale = lambda x: (np.asarray(x, np.float64) - mean) / np.maximum(std, 1e-6)
  x, vx = scale(train_x), scale(val_x)
  y, vy = np.asarray(train_y, np.float64), np.asarray(val_y, np.float64)
  y_mean = y.mean(0)
  w = np.linalg.solve(x.T @ x / len(x) + ridge * np.eye(x.shape[1]), x.T @ (y - y_mean) / len(x))
  sse = ((vx @ w + y_mean - vy) ** 2).sum(0)
  return 1.0 - sse / np.maximum(((vy - y_mean) ** 2).sum(0), 1e-12)


def l2_normalize(x: jax.Array, axis: int = -1) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def knn_neighbours(queries, bank, *, k: int = 20, bank_chunk: int = 65536):
  """The k largest similarities queries @ bank.T [Q, k] (descending) and their bank rows [Q, k],
  jittable; the caller normalises both for cosine similarity.

  The bank is scanned `bank_chunk` rows at a time with a running top-k, so at most
  Q x bank_chunk similarities exist at once, however large the bank.
  """
  n = bank.shape[0]
  k, chunk = min(k, n), min(bank_chunk, n)
  pad = -n % chunk
  bank = jnp.pad(bank, ((0, pad), (0, 0))).reshape(-1, chunk, bank.shape[1])

  def merge(best, xs):
    rows, offset = xs
    ids = offset + jnp.arange(chunk)
    sims = jnp.where(ids < n, queries @ rows.T, -jnp.inf)
    sims = jnp.concatenate([best[0], sims], 1)
    ids = jnp.concatenate([best[1], jnp.broadcast_to(ids, (queries.shape[0], chunk))], 1)
    top, pos = jax.lax.top_k(sims, k)
    return (top, jnp.take_along_axis(ids, pos, 1)), None

  start = (jnp.full((queries.shape[0], k), -jnp.inf), jnp.zeros((queries.shape[0], k), jnp.int32))
  (sims, idx), _ = jax.lax.scan(merge, start, (bank, jnp.arange(bank.shape[0]) * chunk))
  return sims, idx


def knn_class_scores(queries, bank, bank_labels, num_classes: int, *, k: int = 20,
                     temperature: float = 0.07, bank_chunk: int = 65536):
  """[Q, C] summed votes exp(sim / temperature) of each query's k most cosine-similar bank
  points (queries and bank L2-normalised): the weighted kNN classifier, jittable; the bank is
  scanned in chunks (`knn_neighbours`)."""
  sims, idx = knn_neighbours(queries, bank, k=k, bank_chunk=bank_chunk)
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
    bank_chunk: int = 65536,
) -> dict:
  """Weighted cosine kNN classification (InstDisc / DINO protocol).

  Features are L2-normalised; each validation point takes its k most cosine-similar
  training points, each votes for its label with weight exp(sim / temperature),
  and the class scores are the summed votes. Validation points are processed in
  chunks of `chunk_size`, the training bank in chunks of `bank_chunk`, so at most
  chunk_size x bank_chunk similarities exist at once.

  Returns:
    dict(top1, top5) as fractions in [0, 1].
  """
  train_x = l2_normalize(jnp.asarray(train_x, jnp.float32))
  train_y = jnp.asarray(train_y, jnp.int32)
  val_x = np.asarray(val_x, np.float32)
  class_scores = jax.jit(lambda queries, bank, labels: knn_class_scores(
      l2_normalize(queries), bank, labels, num_classes, k=k, temperature=temperature,
      bank_chunk=bank_chunk))
  scores = np.concatenate([np.asarray(class_scores(val_x[i:i + chunk_size], train_x, train_y))
                           for i in range(0, len(val_x), chunk_size)])
  labels = jnp.asarray(val_y, jnp.int32)
  return dict(top1=topk_accuracy(scores, labels, 1), top5=topk_accuracy(scores, labels, 5))
