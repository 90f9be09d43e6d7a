"""Online monitors: how the representation develops *during* training, logged to metrics.jsonl.

Every `eval.every_steps` steps: weighted kNN top-1 of `eval.monitor_examples` fixed held-out
images against a bank of `eval.monitor_bank` fixed training images, and, for methods that steer
sampled augmentations, the steering error on the held-out images (their augmentations fixed too).
The online encoder is used with BatchNorm in inference mode, never the EMA target. The images are
read once (a fixed subset, each process its slice) and each monitor is one jitted forward pass on
the training mesh, so it costs a few percent of the run; the same step gives the same numbers
after a resume. These are learning curves, not the report: the report's kNN and steering
evaluators use the whole (capped) splits.
"""

import jax
import jax.numpy as jnp
import numpy as np

from steerjax import augment
from steerjax import data
from steerjax.metrics import equivariance
from steerjax.metrics import probes


def _rows(source, n: int, seed: int, multiple: int) -> np.ndarray:
  """A fixed seeded choice of n examples, rounded down to a multiple of the device count."""
  n = min(n, len(source)) // multiple * multiple
  return np.sort(np.random.default_rng(seed).choice(len(source), n, replace=False))


class Monitor:
  """`monitor(step, variables)` -> {"monitor_knn_top1": ..., ...} at monitor steps, else {}."""

  def __init__(self, config, method, model, datasets, mesh, place):
    """`place(local_arrays)` assembles each process's slice into global arrays on the mesh."""
    e = config.eval
    self.every = e.every_steps if datasets.num_classes else 0
    if not self.every:
      return
    count, index = jax.process_count(), jax.process_index()
    fns, size = method.eval_functions(model), method.image_size
    steer = method.transform_source == "augment" and fns.steer is not None
    policy = method.policy() if steer else None
    key = jax.random.PRNGKey(config.seed + 11)
    num_classes = datasets.num_classes

    def local(source, n, seed):
      rows = _rows(source, n, seed, mesh.size)
      share = len(rows) // count
      out = data.read(source, rows[index * share:(index + 1) * share])
      return {"image": out["image"], "label": out["label"].astype(np.int32)}

    self._bank = place(local(datasets.train, e.monitor_bank, config.seed + 11))
    self._query = place(local(datasets.val, e.monitor_examples, config.seed + 12))

    def monitor(variables, bank, query):
      embed = lambda x: probes.l2_normalize(fns.embed(variables, augment.resize_batch(x, size)))
      scores = probes.knn_class_scores(embed(query["image"]), embed(bank["image"]), bank["label"],
                                       num_classes)
      out = {"monitor_knn_top1": jnp.mean(scores.argmax(-1) == query["label"])}
      if steer:
        index = jnp.arange(query["image"].shape[0])
        z = equivariance.augmented_steering(policy, fns, size, key)(variables, index,
                                                                    query["image"])
        out["monitor_steering_error"] = equivariance.steering_error_array(
            z["z"], z["z_t"], z["z_p"])
      return out

    self._fn = jax.jit(monitor)

  def __call__(self, step: int, variables) -> dict:
    if not self.every or step % self.every:
      return {}
    out = jax.device_get(self._fn(variables, self._bank, self._query))
    return {k: float(v) for k, v in out.items()}
