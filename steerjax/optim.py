"""Optimizers and learning-rate schedules from a config.

Config keys (ml_collections.ConfigDict):
  name: "lars" | "sgd" | "adam" | "adamw".
  learning_rate: the peak learning rate (configs state it for their batch size).
  weight_decay, momentum (lars, sgd), nesterov (lars, sgd).
  warmup_epochs, warmup_steps: linear warm-up from 0 to the peak rate over
    warmup_epochs * steps_per_epoch + warmup_steps steps (set either; both add).
  schedule: "cosine" (decay to 0 at total_steps after warm-up) | "constant".

Weight decay: LARS (EquiMod/SimCLR) applies neither weight decay nor the trust
ratio to parameters with ndim <= 1 (BatchNorm scales/shifts and biases), with
trust coefficient 1e-3. "sgd" and "adam" add coupled L2 decay to the gradient
of every parameter, as torch.optim.SGD/Adam(weight_decay=...) in the official
code (SIE: Adam, lr 1e-3, wd 1e-6); "adamw" is decoupled decay on every parameter.
"""

import jax
import ml_collections
import optax

OPTIMIZERS = ("adam", "adamw", "lars", "sgd")
SCHEDULES = ("constant", "cosine")
LARS_TRUST_COEFFICIENT = 1e-3


def matrices_only(params):
  """Mask that is True for weight matrices/kernels, False for BN params and biases."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def make_schedule(peak_lr: float, warmup_steps: int, total_steps: int,
                  kind: str) -> optax.Schedule:
  """Linear warm-up from 0 to peak_lr over warmup_steps, then cosine or constant."""
  if kind not in SCHEDULES:
    raise ValueError(f"Unknown schedule {kind!r}; choose from {list(SCHEDULES)}.")
  if kind == "cosine":
    return optax.warmup_cosine_decay_schedule(
        0.0, peak_lr, warmup_steps, max(total_steps, warmup_steps + 1), 0.0)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak_lr, warmup_steps), optax.constant_schedule(peak_lr)],
      [warmup_steps])


def make_optimizer(cfg: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: int
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Returns (optimizer, learning-rate schedule) for `cfg` (see module docstring)."""
  if cfg.name not in OPTIMIZERS:
    raise ValueError(f"Unknown optimizer {cfg.name!r}; choose from {list(OPTIMIZERS)}.")
  peak_lr = cfg.learning_rate
  warmup_steps = (int(round(cfg.get("warmup_epochs", 0) * steps_per_epoch))
                  + cfg.get("warmup_steps", 0))
  schedule = make_schedule(peak_lr, warmup_steps, total_steps, cfg.get("schedule", "cosine"))
  weight_decay = cfg.get("weight_decay", 0.0)

  if cfg.name == "lars":
    tx = optax.lars(
        schedule, weight_decay=weight_decay, weight_decay_mask=matrices_only,
        trust_coefficient=LARS_TRUST_COEFFICIENT, trust_ratio_mask=matrices_only,
        momentum=cfg.get("momentum", 0.9), nesterov=cfg.get("nesterov", False))
  elif cfg.name == "sgd":
    tx = optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.sgd(schedule, momentum=cfg.get("momentum", 0.9),
                  nesterov=cfg.get("nesterov", False)))
  elif cfg.name == "adam":
    tx = optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(schedule))
  else:
    tx = optax.adamw(schedule, weight_decay=weight_decay)
  return tx, schedule
