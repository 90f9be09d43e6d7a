"""Train, resume and evaluate: `python -m steerjax.main --config configs/NAME.py[:ARG] --workdir DIR`.

Overrides use big_vision's syntax, `--config.KEY=VALUE` (e.g. `--config.optim.learning_rate=0.1`,
`--config.eval.evaluators="('linear_probe',)"`). Rerunning the same command on the same workdir
resumes from its latest checkpoint; a finished run only re-evaluates.

Config files are plain Python modules with `get_config(arg)`, loaded here rather than through
`config_flags` so that an unknown key, a wrong type or a missing file is one clear line (exit 2)
instead of a traceback.
"""

import ast
import functools
import importlib.util
import json
import os
import sys

from absl import app
from absl import flags
from absl import logging
import ml_collections

from steerjax import config as config_lib

_CONFIG = flags.DEFINE_string("config", None, "Config file, optionally with ':ARG' (e.g. configs/default.py:smoke).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (checkpoints, metrics, reports). Default: runs/<config name>.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (TPU pods, SLURM: auto-detected).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (explicit multi-process setup).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (explicit multi-process setup).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (explicit multi-process setup).")

_overrides: list[str] = []

# Printed at the end of a run; report.json / report.md hold everything.
HEADLINE = ("train_seconds", "linear_probe_top1", "linear_probe_top1_random_init", "knn_top1",
            "steering_error", "steering_cosine", "sie_mrr", "sie_random_init_mrr", "sie_h1", "rotation_r2_all",
            "tta_none_top1", "tta_image_top1", "tta_steered_top1", "ood_auc_none_mean",
            "ood_auc_steered_mean", "corrupt_top1_mean")


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Loads `path[:arg]` by calling the module's `get_config(arg)`."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise config_lib.ConfigError(f"--config {path}: no such file (configs live in configs/, e.g. configs/default.py)")
  spec_ = importlib.util.spec_from_file_location(f"steerjax_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(spec_)
  spec_.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise config_lib.ConfigError(f"--config {path}: the file defines no get_config(arg)")
  return module.get_config(arg or None)


def _parse_value(text: str, like):
  if isinstance(like, bool):
    if text.lower() in ("true", "1", "yes"):
      return True
    if text.lower() in ("false", "0", "no"):
      return False
    raise ValueError("expected true or false")
  if isinstance(like, str):
    return text
  value = ast.literal_eval(text)
  if isinstance(like, float) and isinstance(value, int):
    value = float(value)
  if isinstance(like, tuple) and isinstance(value, (list, str)):
    value = tuple(value) if isinstance(value, list) else (value,)
  if not isinstance(value, type(like)):
    raise ValueError(f"expected {type(like).__name__}")
  return value


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: list[str]) -> None:
  """Applies `--config.a.b=value` strings, converting each value to the key's type."""
  for item in overrides:
    key, sep, text = item[len("--config."):].partition("=")
    if not sep:
      raise config_lib.ConfigError(f"{item}: expected --config.KEY=VALUE")
    node, parts = cfg, key.split(".")
    for i, part in enumerate(parts):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        known = ", ".join(sorted(node.keys())) if isinstance(node, ml_collections.ConfigDict) else "none"
        raise config_lib.ConfigError(
            f"config.{'.'.join(parts[:i + 1])} is not a known key; known keys here: {known}")
      if i < len(parts) - 1:
        node = node[part]
    try:
      node[parts[-1]] = _parse_value(text, node[parts[-1]])
    except (ValueError, SyntaxError) as e:
      raise config_lib.ConfigError(f"config.{key}={text!r}: {e}") from None


def _parse_flags(argv: list[str]) -> list[str]:
  _overrides.extend(a for a in argv[1:] if a.startswith("--config."))
  return flags.FLAGS([a for a in argv if not a.startswith("--config.")])


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def main(argv: list[str], evaluate_only: bool = False) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  import jax  # pylint: disable=g-import-not-at-top
  from steerjax import data, train, evaluate  # pylint: disable=g-import-not-at-top

  if not _CONFIG.value:
    _fail("--config is required, e.g. --config configs/default.py")
  if _COORDINATOR.value:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  elif _DISTRIBUTED.value:
    jax.distributed.initialize()
  try:
    cfg = load_config(_CONFIG.value)
    apply_overrides(cfg, _overrides)
    config_lib.validate(cfg, jax.device_count())
  except config_lib.ConfigError as e:
    _fail(str(e))
  name = os.path.splitext(os.path.basename(_CONFIG.value.partition(":")[0]))[0]
  workdir = _WORKDIR.value or os.path.join("runs", name)
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      json.dump({"config": _CONFIG.value, "overrides": _overrides, **cfg.to_dict()}, f, indent=2, default=str)
  try:
    run = train.restore(cfg, workdir) if evaluate_only else train.train(cfg, workdir)
  except (data.DatasetNotFoundError, train.NoCheckpointError) as e:
    _fail(str(e))
  except train.NonFiniteLossError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  if not run.completed:
    return
  report = evaluate.evaluate_run(run, workdir)
  if jax.process_index() == 0:
    print(f"report: {os.path.join(workdir, 'report.md')} ({len(report)} numbers); headline:")
    for key in HEADLINE:
      if key in report:
        print(f"  {key}: {report[key]:.4g}")


def run(evaluate_only: bool = False) -> None:
  app.run(functools.partial(main, evaluate_only=evaluate_only), flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
