"""A post-hoc steerer for any frozen encoder: ρ(g) fitted on pairs (f(x), f(g·x)).

  python -m steerjax.fit_steerer --workdir DIR [--converted CDIR] [--evaluate] [--config.KEY=VALUE ...]

The linear-in-g families are linear in their parameters, so least squares is a ridge regression:
`linear`, ρ(g) z = z + Σ_k g_k A_k z, regresses r = f(g·x) − f(x) (`hyper_linear`, W(g) z =
Σ_k g_k W_k z, regresses f(g·x)) on u = g ⊗ f(x) ∈ R^{k·d}, A = (UᵀU + λI)⁺ UᵀR. UᵀU [kd, kd]
and UᵀR [kd, d] are summed batch by batch (`NormalEquations`), so memory is O((k·d)²) whatever
the number of pairs and no image is kept. The other families (`hyper_mlp`, `expm`) are
fitted by Adam on the streamed pairs' embeddings; `equimod`'s predictor ends in an affine-free
BatchNorm, so it cannot predict a representation and is refused. g is the policy's standardised
encoding (steerjax/design.md §4), what the trained steerers see; the fitted variables have the
trained steerer's layout (`steerers.get_steerer`), so steered TTA and the OOD evaluators run on
it unchanged (`steered`).

The CLI fits on DIR's train split (`fit.*` keys; `steerer.name` picks the family and
`augment.policy` the augmentations, by default the run's own), then writes
DIR/fitted_steerer/steerer.msgpack (Flax variables), steerer.json (family, policy, fit keys and
`heldout`: the `steering` evaluator's figures on the val split) and config.json (the config it
was fitted with). `--evaluate` also runs the
configured evaluators with the fitted steerer into DIR/fitted_steerer/report.{json,md};
`api.load_run(DIR, fitted_steerer=True)` gives the run with it. With `--converted CDIR` (a
`python -m steerjax.convert --from-torch` output) the encoder is that one, DIR is just the output
folder and `--config.data.*` says the data.
"""

import argparse
import dataclasses
import functools
import json
import os
import sys
from typing import Any, Callable, Iterable, Iterator

import flax.linen as nn
from flax import serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from steerjax import augment
from steerjax import steerers
from steerjax.metrics import equivariance
from steerjax.methods.base import EvalFunctions, Method

CLOSED_FORM = ("linear", "hyper_linear")
FAMILIES = CLOSED_FORM + ("hyper_mlp", "expm")
KEY = "posthoc_steerer"  # where the fitted steerer sits in a run's variables (`attach`)
SUBDIR = "fitted_steerer"
_FIT_STREAM, _HIGHEST = 11, jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class Fitted:
  """A fitted steerer: `module.apply(variables, z, g)` = ρ(g) z for g encoded by `policy`."""
  family: str
  module: nn.Module
  variables: Any
  policy: augment.Policy

  def __call__(self, z, g):
    return self.module.apply(self.variables, z, g)


def make_steerer(family: str, dim: int, g_dim: int, hidden: int = 512) -> nn.Module:
  """The steerer module of `family`, built as training builds it (`methods.common.steerer`)."""
  return steerers.get_steerer(family, dim, g_dim, **({"hidden": (hidden,)} if family == "hyper_mlp" else {}))


# Pairs ----------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _pairs_fn(policy: augment.Policy, embed_fn: Callable, size: int) -> Callable:
  """Jitted `((variables, key), index, image_uint8) -> {z, z_t, g}`: the plain image's embedding,
  its augmented view's, and the view's encoding; example `index` draws from fold_in(key, index),
  as `equivariance.augmented_steering` (the steering evaluator) does."""

  def compute(state, index, image):
    variables, key = state
    images = image.astype(jnp.float32) / 255.0
    params = jax.vmap(lambda i: policy.sample(jax.random.fold_in(key, i), images.shape[1:3]))(index)
    views = jax.vmap(lambda im, p: policy.apply(im, p, size))(images, params)
    return {"z": embed_fn(variables, augment.resize_batch(image, size)),
            "z_t": embed_fn(variables, views), "g": policy.encode(params)}
  return _batch_jit(compute, 2)


def _batch_jit(fn: Callable, num_batched: int) -> Callable:
  """`jax.jit(fn)` for `fn(variables, *batched)`: variables replicated, the batched arrays and the
  output sharded on their leading axis over this process's devices."""
  mesh = jax.sharding.Mesh(np.asarray(jax.local_devices()), ("data",))
  spec = jax.sharding.NamedSharding
  batch = spec(mesh, jax.sharding.PartitionSpec("data"))
  return jax.jit(fn, in_shardings=(spec(mesh, jax.sharding.PartitionSpec()),) + (batch,) * num_batched,
                 out_shardings=batch)


def pairs(embed_fn: Callable, variables, batches: Iterable[np.ndarray], policy: augment.Policy,
          size: int, seed: int = 0) -> Iterator[dict]:
  """{z, z_t, g} for each uint8 batch [B, H, W, 3] (B a multiple of the local device count),
  augmentations drawn per example from `seed` and the example's position in the stream."""
  fn, key = _pairs_fn(policy, embed_fn, size), jax.random.PRNGKey(seed)
  start = 0
  for images in batches:
    index = np.arange(start, start + len(images), dtype=np.int32)
    start += len(images)
    yield fn((variables, key), index, np.asarray(images))


# Closed form ----------------------------------------------------------------------------------

def features(z, g):
  """u = g ⊗ z [B, k·d]: entry k·d + j is g_k z_j, so ρ(g) z − z = U @ A_flatᵀ."""
  return (g[:, :, None] * z[:, None, :]).reshape(z.shape[0], -1)


@dataclasses.dataclass
class NormalEquations:
  """Running sums UᵀU and UᵀR of a linear-in-g family's least squares, on the device."""
  family: str
  gram: jax.Array | None = None
  cross: jax.Array | None = None
  count: int = 0

  def add(self, z, z_t, g) -> None:
    if self.gram is None:
      kd, d = g.shape[-1] * z.shape[-1], z.shape[-1]
      self.gram, self.cross = jnp.zeros((kd, kd), jnp.float32), jnp.zeros((kd, d), jnp.float32)
    self.gram, self.cross = _accumulate(self.family == "linear", self.gram, self.cross, z, z_t, g)
    self.count += z.shape[0]

  def solve(self, ridge: float) -> dict:
    """The steerer's variables minimising Σ‖r − A u‖² + λ‖A‖², λ = ridge · mean diag(UᵀU)
    (scale-free). Eigenvalues of UᵀU under the pseudo-inverse cut-off are dropped, so ridge 0
    is the minimum-norm least-squares solution (NumPy's lstsq)."""
    if self.gram is None:
      raise ValueError("no pairs were added")
    generators = _solve(self.gram, self.cross, ridge)
    if self.family == "linear":
      return {"params": {"generators": generators}}
    return {"params": {"kernel": generators.reshape(generators.shape[0], -1)}}


@jax.jit
def _solve(gram, cross, ridge):
  kd, d = cross.shape
  s, v = jnp.linalg.eigh(gram)
  lam = ridge * jnp.trace(gram) / kd
  cutoff = jnp.max(s) * kd * jnp.finfo(s.dtype).eps
  inv = jnp.where(s > cutoff, 1.0 / (s + lam), 0.0)
  sol = jnp.matmul(v, inv[:, None] * jnp.matmul(v.T, cross, precision=_HIGHEST), precision=_HIGHEST)
  return sol.reshape(kd // d, d, d).transpose(0, 2, 1)  # sol[k·d + j, i] = A_k[i, j]


@functools.partial(jax.jit, static_argnums=0)
def _accumulate(identity: bool, gram, cross, z, z_t, g):
  u = features(z, g)
  r = z_t - z if identity else z_t
  return (gram + jnp.matmul(u.T, u, precision=_HIGHEST),
          cross + jnp.matmul(u.T, r, precision=_HIGHEST))


# Gradient fitting -----------------------------------------------------------------------------

def fit_gradient(module: nn.Module, z, z_t, g, *, steps: int, learning_rate: float,
                 batch_size: int, seed: int = 0):
  """Variables of `module` minimising E‖module(z, g) − z_t‖² by Adam on random minibatches of
  the pairs' embeddings (one jitted scan)."""
  z, z_t, g = (jnp.asarray(a, jnp.float32) for a in (z, z_t, g))
  init_key, data_key = jax.random.split(jax.random.PRNGKey(seed))
  params = module.init(init_key, z[:1], g[:1])["params"]
  tx, n = optax.adam(learning_rate), z.shape[0]
  batch_size = min(batch_size, n)

  def loss_fn(params, idx):
    pred = module.apply({"params": params}, z[idx], g[idx])
    return jnp.mean(jnp.sum((pred - z_t[idx]) ** 2, -1))

  @jax.jit
  def train(params, key):
    def step(carry, step_key):
      params, opt_state = carry
      idx = jax.random.choice(step_key, n, (batch_size,), replace=False)
      updates, opt_state = tx.update(jax.grad(loss_fn)(params, idx), opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None
    return jax.lax.scan(step, (params, tx.init(params)), jax.random.split(key, steps))[0][0]

  return {"params": train(params, data_key)}


# The whole fit --------------------------------------------------------------------------------

def fit(embed_fn: Callable, variables, batches: Iterable[np.ndarray], policy: augment.Policy,
        size: int, *, family: str = "linear", ridge: float = 1e-6, steps: int = 1000,
        learning_rate: float = 1e-3, batch_size: int = 256, hidden: int = 512,
        seed: int = 0) -> Fitted:
  """Fits a `family` steerer for the encoder `embed_fn(variables, x [B, size, size, 3] in
  [0, 1]) -> [B, d]` on pairs from the uint8 `batches` under `policy`.

  Linear-in-g families: closed-form ridge (`ridge`) over the streamed normal equations. Others:
  the pairs' embeddings are kept (not the images) and `steps` Adam steps fit them.
  """
  if family not in FAMILIES:
    raise ValueError(f"steerer family {family!r} cannot be fitted post hoc; choose from "
                     f"{', '.join(FAMILIES)} (equimod's predictor ends in an affine-free BatchNorm: "
                     "it predicts standardised projections, not a representation)")
  stream = pairs(embed_fn, variables, batches, policy, size, seed)
  if family in CLOSED_FORM:
    normal = NormalEquations(family)
    for p in stream:
      normal.add(p["z"], p["z_t"], p["g"])
    fitted = normal.solve(ridge)
    dim, g_dim = normal.cross.shape[1], normal.cross.shape[0] // normal.cross.shape[1]
  else:
    kept = [jax.device_get(p) for p in stream]
    z, z_t, g = (np.concatenate([p[k] for p in kept]) for k in ("z", "z_t", "g"))
    dim, g_dim = z.shape[1], g.shape[1]
    fitted = fit_gradient(make_steerer(family, dim, g_dim, hidden), z, z_t, g, steps=steps,
                          learning_rate=learning_rate, batch_size=batch_size, seed=seed)
  return Fitted(family, make_steerer(family, dim, g_dim, hidden), jax.device_get(fitted), policy)


def heldout(embed_fn: Callable, variables, fitted: Fitted, batches: Iterable[np.ndarray],
            size: int, seed: int = 7) -> dict[str, float]:
  """Steering error and cosine of `fitted` on held-out uint8 batches (steerjax/design.md §7,
  `equivariance.steering_error`), the augmentations drawn as the steering evaluator draws them."""
  fn, outs, start = _heldout_fn(embed_fn, fitted.module, fitted.policy, size, seed), [], 0
  for images in batches:
    index = np.arange(start, start + len(images), dtype=np.int32)
    start += len(images)
    outs.append(jax.device_get(fn((variables, fitted.variables), index, np.asarray(images))))
  z, z_t, z_p = (np.concatenate([o[k] for o in outs]) for k in ("z", "z_t", "z_p"))
  return {"steering_error": equivariance.steering_error(z, z_t, z_p),
          "steering_cosine": equivariance.steering_cosine(z_t, z_p)}


@functools.lru_cache(maxsize=None)
def _heldout_fn(embed_fn: Callable, module: nn.Module, policy: augment.Policy, size: int, seed: int):
  embed = lambda v, x: embed_fn(v[0], x)
  fns = EvalFunctions(embed=embed, steer_embed=embed, steer=lambda v, z, g: module.apply(v[1], z, g))
  return _batch_jit(equivariance.augmented_steering(policy, fns, size, jax.random.PRNGKey(seed)), 2)


# Drop-in for a run's evaluation ---------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SteeredMethod(Method):
  """`inner` (any method) with a post-hoc `steerer` on its representation: the evaluators then
  treat it as a steerable method, g the encoding of `config.augment.policy`. The steerer's
  variables are read from `variables[collection][KEY]` (`attach`)."""
  inner: Method | None = None
  steerer: nn.Module | None = None
  transform_source: str | None = "augment"
  steers_representation: bool = True

  def build_model(self):
    return self.inner.build_model()

  def make_inputs(self, batch, rng):
    return self.inner.make_inputs(batch, rng)

  def loss(self, outputs, inputs, target_outputs, step):
    return self.inner.loss(outputs, inputs, target_outputs, step)

  @property
  def representation_parts(self):
    return self.inner.representation_parts

  def eval_functions(self, model: nn.Module) -> EvalFunctions:
    embed, steerer = self.inner.eval_functions(model).embed, self.steerer
    own = lambda v: {c: x[KEY] for c, x in v.items() if KEY in x}
    basis = combine = None
    if hasattr(steerer, "basis_apply"):
      basis = lambda v, z: steerer.apply(own(v), z, method="basis_apply")
      combine = lambda v, z, b, g: steerer.apply(own(v), z, b, g, method="combine")
    return EvalFunctions(embed=embed, steer_embed=embed,
                         steer=lambda v, z, g: steerer.apply(own(v), z, g),
                         steer_basis=basis, steer_combine=combine)


def attach(variables: dict, fitted_variables: dict) -> dict:
  """A run's variables with the fitted steerer's added under `KEY` in each of its collections."""
  out = {c: dict(v) for c, v in variables.items()}
  for c, v in fitted_variables.items():
    out.setdefault(c, {})[KEY] = v
  return out


def _with_augment(config: ml_collections.ConfigDict, augment_cfg: dict) -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict(config.to_dict())
  cfg.augment = ml_collections.ConfigDict(augment_cfg, type_safe=False)
  return cfg


def steered(run, fitted: Fitted, augment_cfg: dict | None = None, workdir: str | None = None):
  """The `api.Run` `run` with the fitted steerer as its steerer: `steer`, `tta_curve` and
  `evaluate` (steering, tta, ood, ...) use it. `augment_cfg` (default the run's `augment`
  block) must give `fitted.policy` as view 1's policy; reports go to `workdir` (default
  RUN/fitted_steerer, so the run's own report is kept)."""
  from steerjax import api  # pylint: disable=g-import-not-at-top  (api -> fit_steerer -> api)
  cfg = _with_augment(run.config, augment_cfg or run.config.augment.to_dict())
  inner = run.method
  method = SteeredMethod(config=cfg, num_classes=inner.num_classes, needs_pairs=inner.needs_pairs,
                         uses_target=inner.uses_target, inner=inner, steerer=fitted.module)
  if method.policy() != fitted.policy:
    raise ValueError(f"the fitted steerer's policy {fitted.policy.name} is not the config's "
                     f"{method.policy().name}")
  trained = dataclasses.replace(run.trained, config=cfg, method=method)
  return api.Run(workdir or os.path.join(run.workdir, SUBDIR), trained,
                 _cache={"variables": attach(run.variables, fitted.variables)})


# Files ----------------------------------------------------------------------------------------

def save(out_dir: str, fitted: Fitted, record: dict) -> None:
  """steerer.msgpack (the variables) and steerer.json (family, sizes, `record`)."""
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "steerer.msgpack"), "wb") as f:
    f.write(serialization.msgpack_serialize(jax.tree.map(np.asarray, fitted.variables)))
  with open(os.path.join(out_dir, "steerer.json"), "w") as f:
    json.dump({"family": fitted.family, "dim": fitted.module.dim, "g_dim": fitted.module.g_dim,
               **record}, f, indent=1, default=str)


def load(out_dir: str) -> tuple[Fitted, dict]:
  """(Fitted, the steerer.json record) of a folder written by `save`."""
  path = os.path.join(out_dir, "steerer.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: fit one with python -m steerjax.fit_steerer")
  with open(path) as f:
    record = json.load(f)
  module = make_steerer(record["family"], record["dim"], record["g_dim"], record["fit"]["hidden"])
  with open(os.path.join(out_dir, "steerer.msgpack"), "rb") as f:
    variables = serialization.msgpack_restore(f.read())
  first = augment.get_policy(record["augment"]["policy"])
  return Fitted(record["family"], module, variables, first[0] if isinstance(first, tuple) else first), record


def load_run(workdir: str):
  """The `api.Run` of WORKDIR (or of the converted encoder it was fitted for) with the steerer
  `python -m steerjax.fit_steerer --workdir WORKDIR` wrote."""
  from steerjax import api  # pylint: disable=g-import-not-at-top
  from steerjax import train as train_lib  # pylint: disable=g-import-not-at-top
  out_dir = os.path.join(workdir, SUBDIR)
  fitted, record = load(out_dir)
  cfg = api.load_config(out_dir)  # the config the steerer was fitted with
  if record["converted"]:
    run = converted_run(record["converted"], cfg, out_dir)
  else:
    run = api.Run(workdir, train_lib.restore(cfg, workdir))
  return steered(run, fitted, record["augment"], out_dir)


def converted_run(converted_dir: str, cfg: ml_collections.ConfigDict, workdir: str):
  """An `api.Run` of a converted encoder (`convert.load_converted`) on `cfg`'s data: `cfg`'s
  model keys are set from the conversion, the method's heads keep their random init."""
  from steerjax import api, convert  # pylint: disable=g-import-not-at-top
  from steerjax import train as train_lib  # pylint: disable=g-import-not-at-top
  from steerjax.models import torch_weights  # pylint: disable=g-import-not-at-top
  if not os.path.exists(os.path.join(converted_dir, "encoder.json")):
    raise FileNotFoundError(f"--converted {converted_dir}: no encoder.json (write one with "
                            "python -m steerjax.convert --from-torch FILE --arch ARCH --out DIR)")
  with open(os.path.join(converted_dir, "encoder.json")) as f:
    meta = json.load(f)
  cfg.model.name, cfg.model.cifar_stem = torch_weights.ARCHS[meta["arch"]]
  cfg.model.width_multiplier = float(meta["width_multiplier"])
  _, encoder_variables = convert.load_converted(converted_dir)
  datasets, method, model, _, _, _, state, mesh, example = train_lib.setup(cfg, abstract_state=True)
  variables = train_lib.init_variables(method, model, example, cfg.seed)
  for c, v in encoder_variables.items():
    variables[c]["encoder"] = v
  trained = train_lib.Run(cfg, method, model, datasets, state, mesh, example, 0.0, True)
  return api.Run(workdir, trained, _cache={"variables": variables})


# Command line ---------------------------------------------------------------------------------

def _train_batches(source, examples: int, batch_size: int, seed: int) -> Iterator[np.ndarray]:
  """uint8 batches of `examples` training images (cycling a seeded permutation), read lazily."""
  from steerjax.data import read  # pylint: disable=g-import-not-at-top
  order = np.random.default_rng(seed).permutation(len(source))
  for start in range(0, examples, batch_size):
    yield read(source, order[np.arange(start, start + batch_size) % len(order)])["image"]


def fit_run(run, evaluate: bool = False, converted: str | None = None) -> dict:
  """Fits the steerer of `run.config` (`fit.*`, `steerer.name`, `augment.policy`) on the run's
  train split, measures it with the steering evaluator on val, saves it to RUN/fitted_steerer
  and with `evaluate` runs the configured evaluators there; returns steerer.json's record."""
  from steerjax import evaluators  # pylint: disable=g-import-not-at-top
  from steerjax.evaluators import steering  # pylint: disable=g-import-not-at-top
  cfg, out_dir = run.config, os.path.join(run.workdir, SUBDIR)
  devices = jax.local_device_count()
  batch_size = -(-cfg.fit.batch_size // devices) * devices
  first = augment.get_policy(cfg.augment.policy)
  policy = first[0] if isinstance(first, tuple) else first
  fitted = fit(run.fns.embed, run.variables,
               _train_batches(run.trained.datasets.train, cfg.fit.examples, batch_size,
                              cfg.seed + _FIT_STREAM),
               policy, run.method.image_size, family=cfg.steerer.name, ridge=cfg.fit.ridge,
               steps=cfg.fit.steps, learning_rate=cfg.fit.learning_rate, batch_size=batch_size,
               hidden=cfg.steerer.hidden, seed=cfg.seed + _FIT_STREAM)
  with_steerer = steered(run, fitted, cfg.augment.to_dict(), out_dir)
  record = {"augment": cfg.augment.to_dict(), "fit": {**cfg.fit.to_dict(), "hidden": cfg.steerer.hidden},
            "heldout": steering.run(with_steerer.context()), "converted": converted}
  save(out_dir, fitted, record)
  with open(os.path.join(out_dir, "config.json"), "w") as f:  # what `load_run` rebuilds the run from
    json.dump(json.loads(json.dumps(cfg.to_dict(), default=str)), f, indent=1)
  if evaluate:
    record["report"] = evaluators.evaluate_run(with_steerer.trained, out_dir, with_steerer.context())
  return record


def main(argv: list[str] | None = None) -> None:
  argv = sys.argv[1:] if argv is None else argv
  p = argparse.ArgumentParser(prog="python -m steerjax.fit_steerer", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True, help="a steerjax run (or, with --converted, the output folder)")
  p.add_argument("--converted", help="a folder written by python -m steerjax.convert --from-torch")
  p.add_argument("--evaluate", action="store_true", help="also run the evaluators with the fitted steerer")
  overrides = [a for a in argv if a.startswith("--config.")]
  args = p.parse_args([a for a in argv if not a.startswith("--config.")])
  from steerjax import api, data  # pylint: disable=g-import-not-at-top
  from steerjax import config as config_lib  # pylint: disable=g-import-not-at-top
  from steerjax import main as main_lib  # pylint: disable=g-import-not-at-top
  from steerjax import train as train_lib  # pylint: disable=g-import-not-at-top
  from steerjax.models import torch_weights  # pylint: disable=g-import-not-at-top
  try:
    if args.converted:
      cfg = config_lib.base_config()
    else:
      if not os.path.isdir(args.workdir):
        raise config_lib.ConfigError(f"--workdir {args.workdir}: no such folder (a steerjax run's workdir)")
      cfg = api.load_config(args.workdir)
    main_lib.apply_overrides(cfg, overrides)
    config_lib.validate(cfg)
    if cfg.steerer.name not in FAMILIES:
      raise config_lib.ConfigError(f"config.steerer.name={cfg.steerer.name!r} cannot be fitted post "
                                   f"hoc; expected one of {', '.join(FAMILIES)}")
    config_lib.check_data_found(cfg.data)
    if args.converted:
      run = converted_run(args.converted, cfg, args.workdir)
    else:
      run = api.Run(args.workdir, train_lib.restore(cfg, args.workdir))
    record = fit_run(run, args.evaluate, args.converted)
  except (config_lib.ConfigError, FileNotFoundError, train_lib.NoCheckpointError,
          torch_weights.StateDictError, data.DatasetNotFoundError, data.DatasetMismatchError,
          data.UnreadableImageError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  out = os.path.join(args.workdir, SUBDIR)
  print(f"wrote {out}/steerer.msgpack ({cfg.steerer.name}, policy {fitted_policy_name(record)}); "
        f"held-out steering_error {record['heldout']['steering_error']:.4g}, "
        f"steering_cosine {record['heldout']['steering_cosine']:.4g}")
  if args.evaluate:
    print(f"report: {out}/report.md")


def fitted_policy_name(record: dict) -> str:
  policy = record["augment"]["policy"]
  return policy if isinstance(policy, str) else policy.get("name", "custom")


if __name__ == "__main__":
  main()
