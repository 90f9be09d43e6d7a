"""The Python API: one call each for what a script or notebook does with a run.

    from steerjax import api
    run = api.train(config, "runs/mine")             # in-process, the CLI's code path
    run = api.load_run("runs/mine")                  # latest checkpoint of any workdir
    z = run.embed(images_uint8)                      # [N, d], resized as evaluation resizes
    z_hat = run.steer(z, g)                          # ρ(g) z
    report = run.evaluate()                          # the configured evaluators, report.md
    module, variables = api.load_encoder("runs/mine")

Everything reads the *online* encoder with BatchNorm in inference mode (never BYOL's EMA
target), exactly what `python -m steerjax.main --eval_only` evaluates: loading goes through
`train.restore` and evaluation through `evaluators.evaluate_run`, so the API and the CLI cannot
drift apart. g is the standardised augmentation encoding the steerer learned
(`steerjax/design.md` §4); `run.sample`, `run.encode` and `run.augment` make it from images.
"""

import copy
import dataclasses
import functools
import json
import os
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from steerjax import augment
from steerjax import config as config_lib
from steerjax import evaluators
from steerjax import main as main_lib
from steerjax import train as train_lib
from steerjax import tta as tta_lib
from steerjax.evaluators import base as eval_base
from steerjax.metrics import probes


def _tuples(value):
  """JSON lists back to the tuples the config schema declares."""
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a workdir was trained with (its config.json), validated."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: {workdir} is not a steerjax workdir")
  with open(path) as f:
    saved = json.load(f)
  saved.pop("config", None)
  saved.pop("overrides", None)
  cfg = config_lib.base_config()
  with cfg.unlocked():
    _update(cfg, _tuples(saved))
  config_lib.validate(cfg)  # any device count: checkpoints restore onto any mesh
  return cfg


def _update(node: ml_collections.ConfigDict, values: dict) -> None:
  """Sets saved values into the schema's nodes; `validate` then checks their types."""
  for key, value in values.items():
    if isinstance(node.get(key), ml_collections.ConfigDict) and isinstance(value, dict):
      _update(node[key], value)
    else:
      with node.ignore_type():
        node[key] = value


def _shardings():
  """(replicated, batch-sharded) over this process's devices, as evaluation shards."""
  mesh = jax.sharding.Mesh(np.asarray(jax.local_devices()), ("data",))
  return (jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()),
          jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))


def _sharded_jit(fn, num_batched: int):
  """`jax.jit(fn)` for `fn(variables, *batched)`: variables replicated, the `num_batched`
  arrays and the output sharded on their leading axis."""
  replicated, batch = _shardings()
  return jax.jit(fn, in_shardings=(replicated,) + (batch,) * num_batched, out_shardings=batch)


def _chunked(fn, variables, arrays: tuple, batch_size: int) -> np.ndarray:
  """`fn(variables, *chunk)` over the leading axis in equal chunks (one compiled shape, a
  multiple of the local device count)."""
  n, devices = len(arrays[0]), jax.local_device_count()
  bs = -(-max(1, min(batch_size, n)) // devices) * devices
  outs = []
  for i in range(0, n, bs):
    chunk = [np.asarray(a[i:i + bs]) for a in arrays]
    pad = bs - len(chunk[0])
    if pad:
      chunk = [np.concatenate([c, np.repeat(c[-1:], pad, 0)]) for c in chunk]
    outs.append(np.asarray(fn(variables, *chunk))[: bs - pad])
  return np.concatenate(outs)


@dataclasses.dataclass
class Run:
  """A trained run: config, method, Flax model and its online inference-mode variables.

  `trained` is the trainer's `train.Run` (data sets, full train state, mesh) that evaluation
  reads; `report` is the last report this object computed or the workdir's report.json.
  """
  workdir: str
  trained: train_lib.Run
  report: dict | None = None
  _cache: dict = dataclasses.field(default_factory=dict, repr=False)

  @property
  def config(self) -> ml_collections.ConfigDict:
    return self.trained.config

  @property
  def method(self):
    return self.trained.method

  @property
  def model(self):
    return self.trained.model

  @property
  def variables(self) -> dict:
    """Online params and BatchNorm statistics of the whole model (host copies)."""
    if "variables" not in self._cache:
      self._cache["variables"] = jax.tree.map(
          eval_base._host_copy, train_lib.variables_for_eval(self.trained.state))  # pylint: disable=protected-access
    return self._cache["variables"]

  @property
  def encoder(self):
    return self.model.encoder

  @property
  def encoder_variables(self) -> dict:
    return {c: v["encoder"] for c, v in self.variables.items() if "encoder" in v}

  @property
  def steerer(self):
    """The steerer/predictor module, or None where the method has none."""
    return getattr(self.model, "steerer", None) if self.fns.steer is not None else None

  @property
  def fns(self):
    if "fns" not in self._cache:
      self._cache["fns"] = self.method.eval_functions(self.model)
    return self._cache["fns"]

  @property
  def policy(self):
    """The training policy (view 1's): its encoding is the g the steerer learned."""
    return self.method.policy()

  def examples(self, split: str = "val", n: int = 16) -> dict[str, np.ndarray]:
    """The first `n` examples of a split ("train" or "val"): uint8 `image`, `label`, ..."""
    source = getattr(self.trained.datasets, split)
    return eval_base.read(source, np.arange(min(n, len(source))))

  def _jit(self, name, make, num_batched: int = 1):
    if name not in self._cache:
      self._cache[name] = _sharded_jit(make(), num_batched)
    return self._cache[name]

  def embed(self, images_uint8: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Representations [N, d] of uint8 images [N, H, W, 3], resized as evaluation resizes."""
    size, embed = self.method.image_size, self.fns.embed
    fn = self._jit("embed", lambda: lambda v, x: embed(v, augment.resize_batch(x, size)))
    return _chunked(fn, self.variables, (images_uint8,), batch_size)

  def steer_embed(self, images_uint8: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The embeddings the steerer acts on (the representation itself for steerable; SIE's and
    EquiMod's equivariant projection otherwise)."""
    self._require_steerer()
    size, embed = self.method.image_size, self.fns.steer_embed
    fn = self._jit("steer_embed", lambda: lambda v, x: embed(v, augment.resize_batch(x, size)))
    return _chunked(fn, self.variables, (images_uint8,), batch_size)

  def steer(self, embeddings, g, batch_size: int = 4096) -> np.ndarray:
    """ρ(g) z for embeddings [N, d'] and g [N, k] (or one g [k] for all)."""
    self._require_steerer()
    z = np.asarray(embeddings, np.float32)
    g = np.broadcast_to(np.asarray(g, np.float32), (len(z), np.shape(g)[-1]))
    return _chunked(self._jit("steer", lambda: self.fns.steer, 2), self.variables, (z, g), batch_size)

  def _require_steerer(self):
    if self.fns.steer is None:
      raise ValueError(f"method {self.config.method} has no steerer or predictor")

  def sample(self, seed: int, n: int, source_size: tuple[int, int], policy=None) -> dict:
    """`n` augmentations drawn from `policy` (default: the training policy; a name, a dict or a
    `Policy`), as a dict of arrays with leading axis n."""
    policy = self.policy if policy is None else _policy(policy)
    keys = jax.random.split(jax.random.PRNGKey(seed), n)
    return jax.device_get(jax.vmap(lambda k: policy.sample(k, source_size))(keys))

  def encode(self, params: dict) -> np.ndarray:
    """g for augmentation parameters: the training policy's standardised encoding."""
    return np.asarray(self.policy.encode(params))

  def augment(self, images_uint8: np.ndarray, params: dict, policy=None) -> np.ndarray:
    """Each image under its augmentation (leading axes match): float views [N, s, s, 3] at the
    encoder's input size; `policy` picks which ops run (default: the training policy's)."""
    policy = self.policy if policy is None else _policy(policy)
    return np.asarray(_augment(policy, self.method.image_size, jnp.asarray(images_uint8), params))

  def embed_views(self, views: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Representations of float views already at the encoder's input size (from `augment`)."""
    fn = self._jit("embed_views", lambda: self.fns.embed)
    return _chunked(fn, self.variables, (np.asarray(views, np.float32),), batch_size)

  def context(self) -> eval_base.Context:
    """The evaluators' Context on this run (cached features, probe head), made once."""
    if "context" not in self._cache:
      self._cache["context"] = eval_base.Context(
          self.trained, self.workdir, self.variables, evaluators.random_init_variables(self.trained))
    return self._cache["context"]

  def evaluate(self, names: Sequence[str] | None = None) -> dict[str, float]:
    """Runs the configured evaluators (or those named) as `--eval_only` does, writing
    report.json and report.md to the workdir; returns the report."""
    run = self.trained
    if names is not None:
      cfg = copy.deepcopy(self.config)
      cfg.eval.evaluators = tuple(names)
      config_lib.validate(cfg)
      run = dataclasses.replace(run, config=cfg)
    self.report = evaluators.evaluate_run(run, self.workdir, self.context())
    return self.report

  def tta_curve(self, num_views: Sequence[int] = (1, 2, 4, 8, 16), examples: int = 128,
                repeats: int = 2) -> list[dict]:
    """Linear-probe top-1 and wall time of image-space vs steered TTA as the views N grow.

    The same N views per image for both paths, drawn from `eval.tta_policy` (as the tta
    evaluator draws them); times are the best of `repeats` runs after compilation.
    """
    if not (self.method.steers_representation and self.fns.steer is not None):
      raise ValueError(f"method {self.config.method} does not steer the representation")
    ctx, fns, size = self.context(), self.fns, self.method.image_size
    state = (self.variables, ctx.probe()["head"])
    val = ctx.subset("val", examples)
    images, labels = val["image"], val["label"]
    policy = augment.get_policy(self.config.eval.tta_policy.to_dict())

    def image_path(state, x, params):
      variables, head = state
      return tta_lib.image_tta(functools.partial(fns.embed, variables),
                               lambda z: probes.probe_logits(head, z),
                               x.astype(jnp.float32) / 255.0,
                               lambda im, q: policy.apply(im, q, size), params,
                               batch_size=self.config.eval.batch_size)

    def steered_path(state, x, g):
      variables, head = state
      steerer = (dict(basis_fn=functools.partial(fns.steer_basis, variables),
                      combine_fn=functools.partial(fns.steer_combine, variables))
                 if fns.steer_basis is not None else
                 dict(steer_fn=functools.partial(fns.steer, variables)))
      z = fns.embed(variables, augment.resize_batch(x, size))
      return tta_lib.steered_tta(lambda e: probes.probe_logits(head, e), z, g, **steerer)

    paths = {"image": _sharded_jit(image_path, 2), "steered": _sharded_jit(steered_path, 2)}
    devices = jax.local_device_count()
    images, labels = images[: len(images) // devices * devices], labels[: len(labels) // devices * devices]
    rows = []
    for n in num_views:
      params = self.sample(self.config.seed + 1000, len(images) * n, images.shape[1:3], policy)
      params = jax.tree.map(lambda p: p.reshape(len(images), n, *p.shape[1:]), params)
      row = {"num_views": n}
      for mode, arg in (("image", params), ("steered", self.encode(params))):
        probs = np.asarray(paths[mode](state, images, arg))  # compiles
        row[f"{mode}_top1"] = float(np.mean(probs.argmax(-1) == labels))
        row[f"{mode}_s"] = _best_time(paths[mode], (state, images, arg), repeats)
      rows.append(row)
    return rows


# The identity values of the continuous parameters (`augment.policies`): whole-image crop box,
# jitter factors (1, 1, 1) and hue shift 0.
_IDENTITY = {"box": (0.0, 0.0, 1.0, 1.0), "factors": (1.0, 1.0, 1.0, 0.0)}


def identity_augmentation(n: int) -> dict:
  """`n` copies of the parameters of no augmentation (whole-image crop, every op off): the
  starting point for changing one parameter at a time."""
  one = {"box": np.array(_IDENTITY["box"], np.float32), "flip": np.array(False),
         "jitter": np.array(False), "order": np.arange(4, dtype=np.int32),
         "factors": np.array(_IDENTITY["factors"], np.float32), "grayscale": np.array(False),
         "blur": np.array(False), "sigma": np.array(0.0, np.float32), "solarize": np.array(False)}
  return {k: np.repeat(v[None], n, 0) for k, v in one.items()}


def toward(params: dict, t: float) -> dict:
  """The augmentation a fraction `t` of the way from the identity (t = 0) to `params` (t = 1):
  crop box and jitter factors move linearly; on/off ops (flip, grayscale, blur, solarize) stay
  as drawn, so draw from a policy without them for a path that starts at the identity."""
  out = dict(params)
  for key, identity in _IDENTITY.items():
    value = np.asarray(params[key], np.float32)
    out[key] = (1 - t) * np.asarray(identity, np.float32) + t * value
  return out


@functools.partial(jax.jit, static_argnums=(0, 1))
def _augment(policy, size: int, images_uint8, params):
  floats = images_uint8.astype(jnp.float32) / 255.0
  return jax.vmap(lambda im, p: policy.apply(im, p, size))(floats, params)


def _best_time(fn, args, repeats: int) -> float:
  best = float("inf")
  for _ in range(max(1, repeats)):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - t0)
  return best


def _policy(policy):
  if isinstance(policy, augment.Policy):
    return policy
  out = augment.get_policy(policy.to_dict() if isinstance(policy, ml_collections.ConfigDict) else policy)
  return out[0] if isinstance(out, tuple) else out


def _report(workdir: str) -> dict | None:
  path = os.path.join(workdir, "report.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def load_run(workdir: str, fitted_steerer: bool = False) -> Run:
  """The run as of the workdir's latest good checkpoint (its config from config.json); with
  `fitted_steerer`, steering through the post-hoc steerer `python -m steerjax.fit_steerer`
  wrote there (`steerjax.fit_steerer.load_run`), its reports going to WORKDIR/fitted_steerer."""
  if fitted_steerer:
    from steerjax import fit_steerer  # pylint: disable=g-import-not-at-top  (it imports api)
    return fit_steerer.load_run(workdir)
  return Run(workdir, train_lib.restore(load_config(workdir), workdir), _report(workdir))


def load_encoder(workdir: str):
  """(encoder module, its online inference-mode variables) of a workdir's latest checkpoint:
    `module.apply(variables, images_float01, train=False)` gives the representation."""
  run = load_run(workdir)
  return run.encoder, run.encoder_variables


def train(config: ml_collections.ConfigDict, workdir: str, evaluate: bool = True,
          allow_config_change: bool = False) -> Run:
  """Trains `config` in `workdir` in this process (resuming its latest checkpoint) through the
  CLI's own steps (validation, workdir checks and lock, config.json, train, evaluate), then
  releases the workdir. With `evaluate=False` the report is not computed."""
  record, changes = main_lib.accept(config, "steerjax.api.train", [], workdir, jax.device_count(),
                                    allow_config_change)
  lock = main_lib.start(workdir, record, changes)
  try:
    trained, _ = main_lib.session(config, workdir, evaluate_only=False, evaluate=False)
    run = Run(workdir, trained)
    if evaluate and trained.completed:
      run.evaluate()
  finally:
    lock.close()
  return run


def read_metrics(workdir: str) -> dict[str, np.ndarray]:
  """metrics.jsonl as columns: {"step": [...], "loss": [...], ...} (NaN where a key is absent)."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  keys = list(dict.fromkeys(k for r in rows for k in r))
  return {k: np.array([r.get(k, np.nan) for r in rows], float) for k in keys}


def plot_loss(workdir: str, keys: Sequence[str] | None = None, ax=None):
  """The logged loss terms against the step, from metrics.jsonl; returns the matplotlib Axes.
  Default keys: the loss and each named term the method logs (not the online monitors)."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  columns = read_metrics(workdir)
  not_terms = {"step", "lr", "examples_per_s", "grad_norm", "param_norm", "update_ratio"}
  keys = keys or [k for k in columns if k not in not_terms and not k.startswith("monitor_")]
  if ax is None:
    ax = plt.subplots(figsize=(5, 3.5))[1]
  for key in keys:
    ax.plot(columns["step"], columns[key], label=key)
  ax.set_xlabel("step")
  ax.set_ylabel("training loss")
  ax.legend()
  return ax


def contact_sheet(images_uint8: np.ndarray, columns: int = 8, ax=None, title: str | None = None):
  """uint8 images [N, H, W, 3] in a grid on one Axes; returns the Axes."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  images = np.asarray(images_uint8)
  n, h, w, c = images.shape
  rows = -(-n // columns)
  grid = np.full((rows * h, columns * w, c), 255, images.dtype)
  for i, image in enumerate(images):
    r, col = divmod(i, columns)
    grid[r * h:(r + 1) * h, col * w:(col + 1) * w] = image
  if ax is None:
    ax = plt.subplots(figsize=(columns, rows))[1]
  ax.imshow(grid)
  ax.set_axis_off()
  if title:
    ax.set_title(title)
  return ax


__all__ = ["Run", "contact_sheet", "load_config", "load_encoder", "load_run", "plot_loss",
           "identity_augmentation", "read_metrics", "toward", "train"]
