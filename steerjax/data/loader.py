"""Deterministic, resumable, per-process batching with background prefetch.

The global batch at `step` is a pure function of (seed, step): epoch e = step //
steps_per_epoch uses the permutation seeded by (seed, e), so a run resumed at
step k sees exactly the batches it would have seen. Each process assembles only
its contiguous slice of the global batch (process i of n: rows i*b .. (i+1)*b).

Pairs mode (sources with views) permutes objects instead of examples and draws
two distinct views per object, seeded by (seed, step).
"""

import collections
from concurrent import futures

import numpy as np

from steerjax.data import rotations
from steerjax.data import sources


def read_pairs(read, indices: np.ndarray, quaternion_sign: str = "canonical") -> dict:
  """The view pairs `indices` [B, 2], `read(example indices)` giving stacked arrays: view 1's
  arrays, `image2`/`latent2`/`view_id2` of view 2, and `transform` from view 1 to view 2 (its
  quaternion's sign: `rotations.relative_quaternion`)."""
  first, second = read(indices[:, 0]), read(indices[:, 1])
  out = dict(first, image2=second["image"], latent2=second["latent"], view_id2=second["view_id"])
  out["transform"] = rotations.relative_transform(first["latent"], second["latent"], quaternion_sign)
  return out


class Loader:
  """See the module docstring; `batch(step)` is this process's part of the global batch."""

  def __init__(self, source, global_batch_size: int, seed: int, pairs: bool = False,
               process_index: int | None = None, process_count: int | None = None, num_workers: int = 8,
               prefetch: int = 2, quaternion_sign: str = "canonical"):
    if process_index is None or process_count is None:
      import jax  # pylint: disable=g-import-not-at-top
      process_index, process_count = jax.process_index(), jax.process_count()
    if global_batch_size % process_count:
      raise sources.DatasetMismatchError(
          f"config.batch_size={global_batch_size} is not a multiple of the {process_count} processes")
    if pairs and not getattr(source, "has_views", False):
      raise sources.DatasetMismatchError(
          "config.data.pairs=True needs a dataset with several views per object (synthetic3d, 3diebench)")
    self.source, self.global_batch_size, self.seed, self.pairs = source, global_batch_size, seed, pairs
    self.process_index, self.process_count = process_index, process_count
    self.local_batch_size = global_batch_size // process_count
    self.prefetch, self.quaternion_sign = prefetch, quaternion_sign
    self._table = source.object_table() if pairs else None
    num_units = len(self._table) if pairs else len(source)
    self.steps_per_epoch = num_units // global_batch_size
    if self.steps_per_epoch == 0:
      raise sources.DatasetMismatchError(
          f"config.batch_size={global_batch_size} is larger than the {num_units} training "
          f"{'objects' if pairs else 'examples'}; use a smaller batch or more data")
    self._num_units = num_units
    self._perm_cache = collections.OrderedDict()
    self._pool = None if hasattr(source, "take") else futures.ThreadPoolExecutor(num_workers)

  def _permutation(self, epoch: int) -> np.ndarray:
    if epoch not in self._perm_cache:
      self._perm_cache[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self._num_units)
      while len(self._perm_cache) > 2:
        self._perm_cache.popitem(last=False)
    return self._perm_cache[epoch]

  def global_indices(self, step: int) -> np.ndarray:
    """Example indices of the whole global batch: [B], or [B, 2] (view 1, view 2) in pairs mode."""
    epoch, position = divmod(step, self.steps_per_epoch)
    b = self.global_batch_size
    units = self._permutation(epoch)[position * b:(position + 1) * b]
    if not self.pairs:
      return units
    rng = np.random.default_rng([self.seed, step, 1])
    views = self._table.shape[1]
    first = rng.integers(views, size=b)
    second = (first + rng.integers(1, views, size=b)) % views  # never the same view
    return np.stack([self._table[units, first], self._table[units, second]], -1)

  def local_indices(self, step: int) -> np.ndarray:
    b = self.local_batch_size
    return self.global_indices(step)[self.process_index * b:(self.process_index + 1) * b]

  def _read(self, indices: np.ndarray) -> dict:
    if self._pool is None:
      return self.source.take(indices)
    examples = list(self._pool.map(self.source.__getitem__, indices))
    return {k: np.stack([np.asarray(e[k]) for e in examples]) for k in examples[0]}

  def batch(self, step: int) -> dict:
    """NumPy batch of this process (see the contract for the keys)."""
    indices = self.local_indices(step)
    return read_pairs(self._read, indices, self.quaternion_sign) if self.pairs else self._read(indices)

  def iterate(self, start_step: int = 0, num_steps: int | None = None):
    """Yields (step, batch) from start_step on, `prefetch` batches assembled ahead in threads."""
    stop = None if num_steps is None else start_step + num_steps
    with futures.ThreadPoolExecutor(max(1, self.prefetch)) as pool:
      pending = collections.deque()
      step = start_step
      try:
        while True:
          while len(pending) < self.prefetch + 1 and (stop is None or step < stop):
            pending.append((step, pool.submit(self.batch, step)))
            step += 1
          if not pending:
            return
          done_step, future = pending.popleft()
          yield done_step, future.result()
      finally:
        for _, future in pending:
          future.cancel()
