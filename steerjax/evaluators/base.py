"""What every evaluator shares: its declaration, the 'does not apply' signal, and the Context.

The Context holds a trained run and caches what several evaluators reuse (features, labels,
the linear-probe head), so each split is embedded once per report. Whole splits are *streamed*:
read in `eval.batch_size` chunks, each process its contiguous share, resized and embedded in one
jit whose input is sharded over the process's devices, keeping only features and the small
arrays (labels, latents, ids). Host memory grows with N·d, never with N·H·W·3; the shares are
gathered so every process reports the same numbers.
"""

import dataclasses
import time
from typing import Any, Callable

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np

from steerjax import augment
from steerjax import data
from steerjax import train as train_lib
from steerjax.data import read, tfds_source
from steerjax.data.loader import Loader, read_pairs
from steerjax.methods.base import EvalFunctions
from steerjax.metrics import probes


class NotApplicable(Exception):
  """Raised by an evaluator that does not apply to this method or dataset; the message says why."""


@dataclasses.dataclass(frozen=True)
class Evaluator:
  """One evaluator: `run(ctx) -> {report key: number}`.

  `defaults` are its keys of the `eval` config block (merged into `config.base_config`), `keys`
  the report keys it writes (`{}` marks a part filled at run time, e.g. a corruption name),
  `section` the report.md section it belongs to and `plots` the PNGs (in the workdir) its run
  draws, which report.md shows under that section.
  """
  name: str
  run: Callable[["Context"], dict]
  keys: tuple[str, ...]
  section: str
  defaults: dict = dataclasses.field(default_factory=dict)
  plots: tuple[str, ...] = ()


@dataclasses.dataclass
class Context:
  """A trained model plus cached features, shared by all evaluators."""
  run: train_lib.Run
  workdir: str
  variables: Any
  random_variables: Any
  _cache: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    # Evaluation runs on each process's own devices: the replicated training variables become
    # host copies, so no evaluator's jit mixes global-mesh arguments with local batches.
    self.variables, self.random_variables = (
        jax.tree.map(_host_copy, v) for v in (self.variables, self.random_variables))

  @property
  def config(self):
    return self.run.config

  @property
  def image_size(self) -> int:
    return self.run.method.image_size

  @property
  def fns(self) -> EvalFunctions:
    if "fns" not in self._cache:
      self._cache["fns"] = self.run.method.eval_functions(self.run.model)
    return self._cache["fns"]

  def cached(self, key, make: Callable[[], Any]) -> Any:
    """`make()` once per key for this context (features, jitted functions, probe heads)."""
    if key not in self._cache:
      self._cache[key] = make()
    return self._cache[key]

  def jitted(self, fn: Callable) -> Callable:
    return self.cached(fn, lambda: jax.jit(fn))

  def batched(self, fn: Callable, variables, *arrays) -> Any:
    """`fn(variables, *chunk)` jitted over the leading axis in fixed-size chunks (one shape);
    the output may be a pytree of arrays."""
    return self.timed_batched(fn, variables, *arrays)[0]

  def timed_batched(self, fn: Callable, variables, *arrays) -> tuple[Any, float]:
    """`batched`, and the seconds its chunks took to run, compilation excluded (compiled
    ahead of time for the one chunk shape): how evaluators time a computation they report."""
    n = len(arrays[0])
    bs = min(self.config.eval.batch_size, n)
    outs, seconds = [], 0.0
    for i in range(0, n, bs):
      chunk = [a[i:i + bs] for a in arrays]
      pad = bs - len(chunk[0])
      if pad:
        chunk = [np.concatenate([c, np.repeat(c[-1:], pad, 0)]) for c in chunk]
      shapes = tuple((c.shape, c.dtype.str) for c in chunk)
      compiled = self.cached(("compiled", fn, shapes),
                             lambda: self.jitted(fn).lower(variables, *chunk).compile())
      start = time.perf_counter()
      out = jax.tree.map(lambda o: np.asarray(o)[: bs - pad], compiled(variables, *chunk))
      seconds += time.perf_counter() - start
      outs.append(out)
    return jax.tree.map(lambda *o: np.concatenate(o), *outs), seconds

  def capped_indices(self, split: str) -> np.ndarray:
    """The split's examples evaluation uses: all, or a fixed seeded `eval.max_examples` subset."""
    return self._cap(len(getattr(self.run.datasets, split)))

  def _cap(self, n: int) -> np.ndarray:
    cap = self.config.eval.max_examples
    if not cap or n <= cap:
      return np.arange(n)
    return np.sort(np.random.default_rng(self.config.seed).choice(n, cap, replace=False))

  def images(self, split: str) -> dict[str, np.ndarray]:
    """The split's arrays, images included, capped at `eval.max_examples` (a fixed, seeded
    subset). Only for evaluators that need pixels of a whole capped split; features and labels
    come from `split_arrays`, which streams."""
    key = ("images", split)
    if key not in self._cache:
      source = getattr(self.run.datasets, split)
      self._cache[key] = read(source, self._cap(len(source)))
    return self._cache[key]

  def subset(self, split: str, n: int) -> dict[str, np.ndarray]:
    """The first `n` examples of the capped split, reading only those."""
    source = getattr(self.run.datasets, split)
    return read(source, self._cap(len(source))[:n])

  def stream(self, source, indices: np.ndarray, variables) -> dict[str, np.ndarray]:
    """Embeds `source[indices]` chunk by chunk: {"features": [N, d], non-image arrays...}."""
    size, embed = self.image_size, self.fns.embed
    compute = self.cached("embed_compute", lambda: lambda v, index, image: {
        "features": embed(v, augment.resize_batch(image, size))})
    return self.stream_compute(lambda rows: read(source, indices[rows]), len(indices), compute,
                               variables)

  def stream_split(self, split: str, compute: Callable, variables) -> dict[str, np.ndarray]:
    """`stream_compute` over the split's capped examples (`capped_indices`)."""
    source, rows = getattr(self.run.datasets, split), self.capped_indices(split)
    return self.stream_compute(lambda r: read(source, rows[r]), len(rows), compute, variables)

  def stream_compute(self, read_rows: Callable[[np.ndarray], dict], n: int, compute: Callable,
                     variables, device_keys: tuple[str, ...] = ("image",)) -> dict[str, np.ndarray]:
    """Streams rows 0..n-1 through `compute`, keeping only its outputs and the small arrays.

    `read_rows(rows)` returns those rows' arrays; the `device_keys` ones go to the devices and
    `compute(variables, index, **them)` (jitted, input sharded over this process's devices,
    `index` the rows, for per-example keys) returns a dict of [B, ...] outputs. The other arrays
    stay on the host. Process p streams the p-th contiguous share (padded so every process runs
    the same number of equal-shape chunks); the shares are gathered in row order. Chunks are
    written into arrays allocated at the first chunk, so the kept arrays are held once (a list of
    chunks concatenated at the end would peak at twice that).
    """
    count, index = jax.process_count(), jax.process_index()
    share = -(-n // count)
    mine = np.arange(index * share, min((index + 1) * share, n))
    mine = np.concatenate([mine, np.full(share - len(mine), n - 1)])  # equal shares
    devices = jax.local_devices()
    bs = -(-min(self.config.eval.batch_size, share) // len(devices)) * len(devices)
    sharding = jax.sharding.NamedSharding(jax.sharding.Mesh(devices, ("data",)),
                                          jax.sharding.PartitionSpec("data"))
    fn = self.cached(("stream", compute, sharding),
                     lambda: jax.jit(compute, out_shardings=sharding))
    local = None
    for start in range(0, share, bs):
      chunk = mine[start:start + bs]
      rows = np.concatenate([chunk, np.repeat(chunk[-1:], bs - len(chunk))])
      batch = read_rows(rows)
      on_device = {k: jax.device_put(batch.pop(k), sharding) for k in device_keys}
      out = fn(variables, jax.device_put(rows.astype(np.int32), sharding), **on_device)
      part = {**{k: np.asarray(v) for k, v in out.items()}, **batch}
      if local is None:
        local = {k: np.empty((share, *v.shape[1:]), v.dtype) for k, v in part.items()}
      for k, v in part.items():
        local[k][start:start + len(chunk)] = v[: len(chunk)]
    if count > 1:
      local = {k: np.asarray(multihost_utils.process_allgather(v, tiled=True))
               for k, v in local.items()}
    return {k: v[:n] for k, v in local.items()}

  def split_arrays(self, split: str, random_init: bool = False) -> dict[str, np.ndarray]:
    """Streamed features of the capped split plus its non-image arrays (label, latent, ...)."""
    key = ("stream", split, random_init)
    if key not in self._cache:
      source = getattr(self.run.datasets, split)
      variables = self.random_variables if random_init else self.variables
      self._cache[key] = self.stream(source, self._cap(len(source)), variables)
    return self._cache[key]

  def features(self, split: str, random_init: bool = False) -> np.ndarray:
    return self.split_arrays(split, random_init)["features"]

  def view_pairs(self, split: str, num_objects: int) -> tuple[np.ndarray, Callable]:
    """Two distinct rendered views of up to `num_objects` objects, drawn as training draws them:
    (their [n, 2] example indices, `read_rows(rows)` -> `image`, `image2`, `transform` from view 1
    to view 2, ... of those rows). Needs a multi-view split."""
    source = getattr(self.run.datasets, split)
    if not getattr(source, "has_views", False):
      raise NotApplicable(f"the {split} split has no rendered views of one object")
    batch = min(num_objects, len(source.object_table()))
    indices = Loader(source, batch, seed=self.config.seed + 7, pairs=True, process_index=0,
                     process_count=1, prefetch=0).global_indices(0)
    sign = self.config.data.quaternion_sign
    return indices, lambda rows: read_pairs(lambda i: read(source, i), indices[rows], sign)

  def tfds_arrays(self, name: str, split: str) -> dict[str, np.ndarray] | None:
    """Streamed features and labels of up to `eval.max_examples` examples of a prepared tfds
    dataset; None when it is absent."""
    key = ("tfds", name, split)
    if key not in self._cache:
      try:
        source = tfds_source.TfdsSource(name, split, self.config.data.data_dir or None,
                                        self.config.data.image_size)
      except data.DatasetNotFoundError:
        self._cache[key] = None
      else:
        n = min(len(source), self.config.eval.max_examples or len(source))
        self._cache[key] = self.stream(source, np.arange(n), self.variables)
    return self._cache[key]

  def tfds_images(self, name: str, split: str, n: int) -> dict[str, np.ndarray] | None:
    """The first `n` examples (images included) of a prepared tfds dataset; None when absent."""
    try:
      source = tfds_source.TfdsSource(name, split, self.config.data.data_dir or None,
                                      self.config.data.image_size)
    except data.DatasetNotFoundError:
      return None
    return read(source, np.arange(min(n, len(source))))

  def floats(self, images_uint8: np.ndarray) -> np.ndarray:
    return np.asarray(augment.resize_batch(jnp.asarray(images_uint8), self.image_size))

  def embed(self, images_uint8: np.ndarray, variables=None) -> np.ndarray:
    return self.batched(self.fns.embed, self.variables if variables is None else variables,
                        self.floats(images_uint8))

  def pixel_features(self, split: str) -> np.ndarray:
    """The capped split's images resized to `eval.pixel_probe_size`² and flattened: the
    reference every encoder's probe should beat."""
    key = ("pixels", split)
    if key not in self._cache:
      size = self.config.eval.pixel_probe_size
      compute = self.cached("pixel_compute", lambda: lambda v, index, image: {
          "features": augment.resize_batch(image, size).reshape(image.shape[0], -1)})
      self._cache[key] = self.stream_split(split, compute, None)["features"]
    return self._cache[key]

  def probe_settings(self) -> dict:
    """The linear probe's training settings: the protocol `eval.probe_protocol` names in
    `probes.PROTOCOLS`, or for "fast" the eval.probe_* keys."""
    e = self.config.eval
    if e.probe_protocol in probes.PROTOCOLS:
      return dict(probes.PROTOCOLS[e.probe_protocol], seed=self.config.seed)
    return dict(epochs=e.probe_epochs, batch_size=e.probe_batch_size, lr=e.probe_lr,
                optimizer=e.probe_optimizer, seed=self.config.seed)

  def probe(self, random_init: bool = False, pixels: bool = False) -> dict:
    """The linear probe on the trained encoder's features (the head TTA, OOD and transfer
    classify with), on a random-init encoder's, or on the pixels."""
    key = ("probe", random_init, pixels)
    if key not in self._cache:
      features = self.pixel_features if pixels else lambda split: self.features(split, random_init)
      self._cache[key] = probes.linear_probe(
          features("train"), self.split_arrays("train")["label"],
          features("val"), self.split_arrays("val")["label"],
          self.run.datasets.num_classes, **self.probe_settings())
    return self._cache[key]

  def require_steerer(self) -> None:
    if self.fns.steer is None:
      raise NotApplicable(f"method {self.config.method} has no steerer or predictor")


def _host_copy(x):
  """A replicated (possibly multi-process) array as NumPy, from this process's first shard."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return np.asarray(x.addressable_data(0))
  return x
