"""One jitted, sharded train step for every method, and the loop around it.

The step is a single XLA program: fold the step into the run's key, build the
method's inputs on device (augmentation included), forward, loss, backward,
optax update, EMA target. The batch is sharded over a 1-D mesh of all devices
on its leading axis and everything else is replicated, so BatchNorm statistics
and contrastive negatives come from the whole global batch (SyncBN) and the
loss, hence its gradient, does not depend on the device count.
"""

import dataclasses
import json
import math
import os
import signal
import time
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from steerjax import checkpoint
from steerjax import data
from steerjax import losses
from steerjax import methods
from steerjax import optim
from steerjax.data.loader import Loader
from steerjax.methods.base import Method
from steerjax.monitor import Monitor

DATA_AXIS = "data"
# Train steps fold their step number into the run key; initialisation uses a stream no step reaches.
_INIT_STREAM = 2**32 - 1


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  target_params: Any  # EMA copy for methods with a target network, else None
  target_batch_stats: Any
  rng: jax.Array  # raw uint32 key: the run's base key; step keys are folded in


def make_mesh(devices=None) -> Mesh:
  devices = np.asarray(devices if devices is not None else jax.devices())
  return Mesh(devices.reshape(-1), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles each process's slice into one global array sharded on the batch axis."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}


def init_variables(method: Method, model: nn.Module, example_batch: dict[str, np.ndarray],
                   seed: int) -> dict[str, Any]:
  """Model variables from `seed`; the example batch only fixes input shapes."""
  init_rng, input_rng = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(seed), _INIT_STREAM))
  inputs = method.make_inputs(example_batch, input_rng)
  return flax.core.unfreeze(model.init(init_rng, inputs, train=False))


def create_state(method: Method, model: nn.Module, tx: optax.GradientTransformation,
                 example_batch: dict[str, np.ndarray], seed: int, mesh: Mesh,
                 abstract: bool = False) -> TrainState:
  """Initialises parameters, optimiser state and EMA target, replicated on the mesh.

  `abstract`: only their shapes, dtypes and shardings (a restore target), so nothing is
  compiled or computed.
  """

  def init():
    variables = init_variables(method, model, example_batch, seed)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    target = method.uses_target
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                      opt_state=tx.init(params),
                      target_params=params if target else None,
                      target_batch_stats=batch_stats if target else None,
                      rng=jax.random.PRNGKey(seed))

  init = jax.jit(init, out_shardings=replicated(mesh))
  return init.eval_shape() if abstract else init()


def _kernel_norm(tree, params) -> jax.Array:
  """Global norm of `tree`'s leaves where `params` holds a weight matrix or kernel (ndim > 1)."""
  return optax.tree.norm([x for x, p in zip(jax.tree.leaves(tree), jax.tree.leaves(params)) if p.ndim > 1])


def make_train_step(method: Method, model: nn.Module, tx: optax.GradientTransformation,
                    mesh: Mesh, total_steps: int) -> Callable:
  """Returns the jitted `step(state, batch) -> (state, metrics)`; the state is donated."""

  def step_fn(state: TrainState, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    input_rng, dropout_rng = jax.random.split(rng)
    inputs = method.make_inputs(batch, input_rng)

    target_out = None
    new_target_stats = state.target_batch_stats
    if method.uses_target:
      target_out, target_vars = model.apply(
          {"params": state.target_params, "batch_stats": state.target_batch_stats},
          inputs, train=True, method="target", mutable=["batch_stats"])
      target_out = jax.lax.stop_gradient(target_out)
      new_target_stats = target_vars["batch_stats"]

    def loss_fn(params):
      out, new_vars = model.apply({"params": params, "batch_stats": state.batch_stats}, inputs,
                                  train=True, mutable=["batch_stats"],
                                  rngs={"dropout": dropout_rng})
      loss, terms = method.loss(out, inputs, target_out, state.step)
      return loss, (terms, new_vars.get("batch_stats", {}))

    (loss, (terms, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)

    target_params = state.target_params
    if method.uses_target:
      tau = losses.byol_tau(state.step, total_steps, method.config.loss.ema_base)
      target_params = losses.ema_update(state.target_params, params, tau)

    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads),
               "param_norm": optax.tree.norm(params),
               "update_ratio": _kernel_norm(updates, state.params) / _kernel_norm(state.params, state.params),
               **terms}
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state, target_params=target_params,
                              target_batch_stats=new_target_stats)
    return new_state, metrics

  rep = replicated(mesh)
  return jax.jit(step_fn, in_shardings=(rep, batch_sharding(mesh)), out_shardings=(rep, rep),
                 donate_argnums=0)


@dataclasses.dataclass
class Throughput:
  """Examples per second over the steps since the last call."""
  batch_size: int
  _last: tuple[float, int] | None = None

  def __call__(self, now: float, step: int) -> float:
    last, self._last = self._last, (now, step)
    if last is None or now <= last[0]:
      return float("nan")
    return (step - last[1]) * self.batch_size / (now - last[0])


def variables_for_eval(state: TrainState) -> dict[str, Any]:
  """The online encoder's variables: evaluation never uses the EMA target."""
  return {"params": state.params, "batch_stats": state.batch_stats}


# `update_ratio`: the norm of a step's update to the weight matrices and kernels over their norm.
# A healthy step moves them by a small fraction (measured on the test-size run, 40 steps: at most
# 0.011 with AdamW at 2e-3, 0.031 with LARS at 4.0, 0.037 with SGD at 0.1); one that moves them
# further than their own norm has exploded. Biases and BatchNorm shifts are left out: they start
# at zero, and LARS gives them plain SGD steps, so their relative change says nothing about an
# explosion (with them, LARS at 4.0 reached 0.24).
MAX_UPDATE_RATIO = 1.0


def divergence(metrics: dict[str, float]) -> str | None:
  """Why a step's update must not be kept (its loss, gradient or parameters are not finite, or it
  moved the weights by more than their norm), or None for a healthy step.

  Finiteness alone is not enough: an absurd learning rate blows the parameters and the optimiser
  state up by orders of magnitude while the loss stays finite (normalised embeddings bound the
  contrastive losses), so the "last finite" checkpoint would already be garbage and a rerun with
  a lower learning rate would diverge again. The loop checks each step before saving its state,
  so every checkpoint on disk is from before the explosion.
  """
  for key in ("loss", "grad_norm", "param_norm"):
    if not math.isfinite(metrics[key]):
      return f"{key} {metrics[key]}"
  if not metrics["update_ratio"] <= MAX_UPDATE_RATIO:
    return (f"the update moved the weights by {metrics['update_ratio']:.3g} times their norm, "
            f"more than {MAX_UPDATE_RATIO:g}")
  return None


class DivergedError(RuntimeError):
  """Training diverged: the run stopped before saving the bad step; checkpoints from before are kept."""

  def __init__(self, step: int, reason: str, workdir: str, kept: list[int]):
    where = os.path.join(workdir, "checkpoints")
    if kept:
      resume = (f"checkpoints kept in {where}, all from before it: step {', '.join(map(str, kept))}; "
                f"resume from step {kept[-1]} with a lower learning rate and --allow_config_change "
                "(--resume_step N goes back to an earlier one)")
    else:
      resume = (f"no checkpoint was saved before it; rerun with a lower learning rate and "
                "--allow_config_change to start afresh")
    super().__init__(f"training diverged at step {step} ({reason}); stopped without saving it. "
                     + resume)


class _StopRequest:
  """Turns SIGTERM/SIGINT into a flag the loop checks after each step."""

  def __init__(self):
    self.signal_name = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    self.signal_name = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


@dataclasses.dataclass
class Run:
  """Everything evaluation needs from a training run."""
  config: Any
  method: Method
  model: nn.Module
  datasets: Any
  state: TrainState
  mesh: Mesh
  example_batch: dict[str, np.ndarray]  # two examples: fixes input shapes for re-initialising
  train_seconds: float
  completed: bool  # False when stopped early by a signal or a preemption


def _truncate_metrics(path: str, step: int) -> None:
  """Drops log lines written after the checkpoint we resume from."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    kept = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
  with open(path, "w") as f:
    f.writelines(kept)


def _tensorboard(workdir: str):
  """A TensorBoard writer when tensorboardX is installed (optional: metrics.jsonl has it all)."""
  try:
    import tensorboardX  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return tensorboardX.SummaryWriter(os.path.join(workdir, "tensorboard"))


def _train_seconds(workdir: str) -> float:
  """Training time of the run's earlier sessions that ended cleanly (a killed one records none)."""
  path = os.path.join(workdir, "train_seconds.json")
  if not os.path.exists(path):
    return 0.0
  with open(path) as f:
    return json.load(f)["seconds"]


def setup(config, mesh: Mesh | None = None, abstract_state: bool = False):
  """Builds data, method, model, optimiser, loader and the fresh (or abstract) train state."""
  mesh = mesh or make_mesh()
  datasets = data.get_datasets(config.data)
  method = methods.get_method(config, datasets.num_classes)
  model = method.build_model()
  loader = Loader(datasets.train, config.batch_size, seed=config.seed, pairs=method.needs_pairs,
                  process_index=jax.process_index(), process_count=jax.process_count(),
                  quaternion_sign=config.data.quaternion_sign)
  tx, schedule = optim.make_optimizer(config.optim, config.total_steps, loader.steps_per_epoch)
  example = {k: v[:2] for k, v in loader.batch(0).items()}
  state = create_state(method, model, tx, example, config.seed, mesh, abstract_state)
  return datasets, method, model, loader, tx, schedule, state, mesh, example


def train(config, workdir: str, mesh: Mesh | None = None, resume_step: int | None = None) -> Run:
  """Trains (resuming from the workdir's latest checkpoint) and returns the run.

  `resume_step`: resume from that checkpoint instead (e.g. one from before a divergence); the
  newer ones are moved to bad_checkpoints/ and their steps are trained again.
  """
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  datasets, method, model, loader, tx, schedule, state, mesh, example = setup(config, mesh)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), config.checkpoint_every,
                                 config.keep_checkpoints)
  bad_dir = os.path.join(workdir, "bad_checkpoints")
  if resume_step is not None:
    ckpt.set_aside_after(resume_step, bad_dir)
  start, state = ckpt.restore_latest_good(state, bad_dir)
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  is_main = jax.process_index() == 0
  if is_main:
    _truncate_metrics(metrics_path, start)
  step_fn = make_train_step(method, model, tx, mesh, config.total_steps)
  monitor = Monitor(config, method, model, datasets, mesh, lambda arrays: global_batch(arrays, mesh))
  throughput = Throughput(config.batch_size)
  train_seconds = _train_seconds(workdir) if start else 0.0

  bar = tqdm(total=config.total_steps, initial=start, disable=not (config.progress and is_main),
             dynamic_ncols=True, desc="train")
  completed = True
  writer = _tensorboard(workdir) if is_main else None
  t_start = time.perf_counter()
  with _StopRequest() as stop, open(metrics_path, "a") if is_main else open(os.devnull, "w") as log:
    for step, batch in loader.iterate(start, max(0, config.total_steps - start)):
      state, metrics = step_fn(state, global_batch(batch, mesh))
      metrics = jax.device_get(metrics)
      done = step + 1
      # Checked before this step's state is saved, so every checkpoint on disk is from before it.
      reason = divergence({k: float(v) for k, v in metrics.items()})
      if reason:
        ckpt.close()
        raise DivergedError(step, reason, workdir, ckpt.steps())
      ex_per_s = throughput(time.perf_counter(), done)
      bar.update(1)
      monitored = monitor(done, variables_for_eval(state))
      if done % config.log_every == 0 or done == config.total_steps or monitored:
        record = {"step": done, "lr": float(schedule(step)), "examples_per_s": ex_per_s,
                  **{k: float(v) for k, v in metrics.items()}, **monitored}
        log.write(json.dumps(record) + "\n")
        log.flush()
        for key, value in record.items():
          if writer is not None and key != "step":
            writer.add_scalar(key, value, done)
        bar.set_postfix(loss=f"{record['loss']:.4f}", ex_s=f"{ex_per_s:.0f}")
      ckpt.save(done, state, force=done == config.total_steps)
      if stop.signal_name or ckpt.reached_preemption(done):
        ckpt.save(done, state, force=True)
        bar.write(f"{stop.signal_name or 'preemption'}: saved step {done}; rerun the same command to resume.")
        completed = done >= config.total_steps
        break
  bar.close()
  if writer is not None:
    writer.close()
  train_seconds += time.perf_counter() - t_start
  if is_main:
    with open(os.path.join(workdir, "train_seconds.json"), "w") as f:
      json.dump({"seconds": train_seconds}, f)
  ckpt.close()
  return Run(config, method, model, datasets, state, mesh, example, train_seconds, completed)


class NoCheckpointError(FileNotFoundError):
  """Evaluation was asked for a workdir that holds no checkpoint."""


def restore(config, workdir: str, mesh: Mesh | None = None) -> Run:
  """The run as of the workdir's latest checkpoint, for evaluation only (the checkpoint is read
  into an abstract state: no initialisation is compiled)."""
  datasets, method, model, _, _, _, state, mesh, example = setup(config, mesh, abstract_state=True)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), config.checkpoint_every,
                                 config.keep_checkpoints)
  if ckpt.latest_step() is None:
    raise NoCheckpointError(f"no checkpoint in {workdir}/checkpoints; train first with "
                            f"python -m steerjax.main --config ... --workdir {workdir}")
  _, state = ckpt.restore_latest_good(state, os.path.join(workdir, "bad_checkpoints"))
  ckpt.close()
  return Run(config, method, model, datasets, state, mesh, example, _train_seconds(workdir), True)
