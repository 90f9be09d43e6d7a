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
import importlib.machinery
import importlib.util
import json
import os
import shlex
import sys
import time

from absl import app
from absl import flags
from absl import logging
import ml_collections

from steerjax import config as config_lib
from steerjax import workdir_lock

_CONFIG = flags.DEFINE_string("config", None, "Config file, optionally with ':ARG' (e.g. configs/default.py:smoke).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (checkpoints, metrics, reports). Default: runs/<config name>.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (TPU pods, SLURM: auto-detected).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (explicit multi-process setup).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (explicit multi-process setup).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (explicit multi-process setup).")
_ALLOW_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False,
    "Resume even though training keys differ from the workdir's config.json (recorded in config_changes.jsonl).")
_EVAL_ONLY = flags.DEFINE_bool("eval_only", False, "Evaluate the workdir's latest checkpoint; no training.")
_RESUME_STEP = flags.DEFINE_integer(
    "resume_step", None,
    "Resume from this checkpoint step instead of the latest (e.g. one from before a divergence); "
    "newer checkpoints are moved to bad_checkpoints/ and their steps trained again.")

_overrides: list[str] = []

# Printed at the end of a run; report.json / report.md hold everything.
HEADLINE = ("train_seconds", "linear_probe_top1", "linear_probe_top1_random_init", "knn_top1",
            "steering_error", "steering_cosine", "sie_mrr", "sie_random_init_mrr", "sie_h1", "rotation_r2_all",
            "tta_none_top1", "tta_image_top1", "tta_steered_top1", "ood_auc_none_mean",
            "ood_auc_steered_mean", "corrupt_top1_mean")


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Loads `path[:arg]` by calling the module's `get_config(arg)`.

  Anything the file raises (a syntax error, a failed import, a wrong type assigned) becomes one
  line naming the file and line, not a traceback.
  """
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise config_lib.ConfigError(f"--config {path}: no such file (configs live in configs/, e.g. configs/default.py)")
  name = f"steerjax_config_{abs(hash(path))}"
  loader = importlib.machinery.SourceFileLoader(name, path)  # any file name, e.g. my_config.txt
  try:
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader))
    loader.exec_module(module)
    if not hasattr(module, "get_config"):
      raise config_lib.ConfigError(f"--config {path}: the file defines no get_config(arg)")
    cfg = module.get_config(arg or None)
  except config_lib.ConfigError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (whatever the user's file raises)
    line = e.lineno if isinstance(e, SyntaxError) else next(
        (t.tb_lineno for t in reversed(list(_frames(e.__traceback__)))
         if t.tb_frame.f_code.co_filename == path), None)
    where = f" line {line}:" if line else ""
    message = (e.msg if isinstance(e, SyntaxError) else str(e)).splitlines()
    raise config_lib.ConfigError(
        f"--config {spec}:{where} {type(e).__name__}: {message[0] if message else ''}") from None
  if not isinstance(cfg, ml_collections.ConfigDict):
    raise config_lib.ConfigError(f"--config {path}: get_config returned a {type(cfg).__name__}; "
                                 "expected an ml_collections.ConfigDict (start from config.base_config())")
  return cfg


def _frames(tb):
  while tb is not None:
    yield tb
    tb = tb.tb_next


def _parse_value(text: str, like):
  """`text` as a value of `like`'s type; a bool is never taken for a number (True is not 1)."""
  if isinstance(like, bool):
    if text.lower() in ("true", "1", "yes"):
      return True
    if text.lower() in ("false", "0", "no"):
      return False
    raise ValueError("expected true or false")
  if isinstance(like, str):
    return text
  value = ast.literal_eval(text)
  if isinstance(value, bool):
    raise ValueError(f"expected {type(like).__name__}, not a bool")
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


# Keys that do not change the trained parameters: they may differ between sessions of one run.
EVAL_ONLY_PREFIXES = ("eval.", "fit.", "progress", "log_every", "checkpoint_every", "keep_checkpoints")


def _flat(tree: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def config_record(spec: str, overrides: list[str], cfg: ml_collections.ConfigDict) -> dict:
  """What config.json holds, in its JSON form (tuples as lists) so it compares with a saved one."""
  record = {"config": spec, "overrides": list(overrides), **cfg.to_dict()}
  return json.loads(json.dumps(record, default=str))


def changed_training_keys(saved: dict, new: dict) -> dict[str, tuple]:
  """Training keys whose value differs between two config records, as {key: (saved, new)}."""
  a, b = _flat(saved), _flat(new)
  keys = (a.keys() | b.keys()) - {"config", "overrides"}
  return {k: (a.get(k), b.get(k)) for k in sorted(keys)
          if not k.startswith(EVAL_ONLY_PREFIXES) and a.get(k) != b.get(k)}


def check_workdir(workdir: str, record: dict, allow_change: bool) -> dict[str, tuple]:
  """Refuses an unusable workdir or a changed training config; returns the accepted changes.

  Writes nothing, so a refused command leaves an existing workdir exactly as it was.
  """
  if not workdir:
    raise config_lib.ConfigError("--workdir is empty; pass a folder, e.g. --workdir runs/default")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise config_lib.ConfigError(f"--workdir {workdir} is a file; pass a folder (new or a run's workdir)")
  parent = workdir
  while not os.path.exists(parent):
    parent = os.path.dirname(os.path.abspath(parent))
  if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
    raise config_lib.ConfigError(f"--workdir {workdir}: {parent} is not a writable folder; "
                                 "pass a folder you can write to")
  saved_path = os.path.join(workdir, "config.json")
  if not os.path.exists(saved_path):
    return {}
  try:
    with open(saved_path) as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    raise config_lib.ConfigError(f"{saved_path} is unreadable ({e}); move it away to start this "
                                 "workdir afresh") from None
  changes = changed_training_keys(saved, record)
  if changes and not allow_change:
    raise config_lib.ConfigError(
        f"{workdir} was trained with another config; differing keys: "
        + ", ".join(f"{k} ({a!r} -> {b!r})" for k, (a, b) in changes.items())
        + "; use a new --workdir, or pass --allow_config_change to resume with the change recorded")
  return changes


def accept(cfg: ml_collections.ConfigDict, spec: str, overrides: list[str], workdir: str,
           num_devices: int, allow_change: bool = False) -> tuple[dict, dict[str, tuple]]:
  """Validates the config and checks the workdir against it: (record, accepted changes)."""
  config_lib.validate(cfg, num_devices)
  config_lib.check_data_found(cfg.data)
  record = config_record(spec, overrides, cfg)
  return record, check_workdir(workdir, record, allow_change)


def prepare(spec: str | None, overrides: list[str], workdir: str | None, num_devices: int,
            allow_change: bool = False):
  """Loads, overrides and validates the config and checks the workdir: (cfg, workdir, record, changes).

  Raises ConfigError (one line) on any bad input, before anything is written.
  """
  if not spec:
    raise config_lib.ConfigError("--config is required, e.g. --config configs/default.py")
  cfg = load_config(spec)
  apply_overrides(cfg, overrides)
  name = os.path.splitext(os.path.basename(spec.partition(":")[0]))[0]
  workdir = os.path.join("runs", name) if workdir is None else workdir
  return (cfg, workdir, *accept(cfg, spec, overrides, workdir, num_devices, allow_change))


def check_resume_step(workdir: str, step: int | None, evaluate_only: bool) -> None:
  """`--resume_step` names a checkpoint that exists (a look at the folder: nothing is written)."""
  if step is None:
    return
  if evaluate_only:
    raise config_lib.ConfigError("--resume_step is for training; --eval_only evaluates the latest "
                                 "checkpoint (resume from an earlier one first)")
  folder = os.path.join(workdir, "checkpoints")
  steps = sorted(int(d) for d in os.listdir(folder) if d.isdigit()) if os.path.isdir(folder) else []
  if step not in steps:
    raise config_lib.ConfigError(
        f"--resume_step {step}: {folder} holds no checkpoint of that step; available steps: "
        + (", ".join(map(str, steps)) if steps else "none (train without --resume_step)"))


def resume_command(spec: str, overrides: list[str], workdir: str, learning_rate: float) -> str:
  """The command that resumes this run with `learning_rate` (after a divergence)."""
  kept = [o for o in overrides if not o.startswith("--config.optim.learning_rate=")]
  return shlex.join(["python", "-m", "steerjax.main", "--config", spec, "--workdir", workdir, *kept,
                     f"--config.optim.learning_rate={learning_rate:g}", "--allow_config_change"])


def start(workdir: str, record: dict, changes: dict[str, tuple]):
  """Creates the workdir, takes its lock and records the config; returns the lock (hold it open
  for the session: closing it, or the process ending, releases the workdir)."""
  import jax  # pylint: disable=g-import-not-at-top
  os.makedirs(workdir, exist_ok=True)
  lock = workdir_lock.acquire(workdir, jax.process_index())
  if jax.process_index() == 0:
    if changes:
      with open(os.path.join(workdir, "config_changes.jsonl"), "a") as f:
        f.write(json.dumps({"time": time.time(), "changes": changes}) + "\n")
    with open(os.path.join(workdir, "config.json"), "w") as f:
      json.dump(record, f, indent=2)
  return lock


def session(cfg: ml_collections.ConfigDict, workdir: str, evaluate_only: bool,
            evaluate: bool = True, resume_step: int | None = None):
  """Trains (resuming) or restores the run, then evaluates it if it completed: (run, report or None).

  The CLI and `steerjax.api.train` both run this (the API evaluates through its `Run`, which
  keeps the evaluators' cached features); errors propagate for the caller to present.
  """
  from steerjax import evaluators, train  # pylint: disable=g-import-not-at-top
  run = (train.restore(cfg, workdir) if evaluate_only
         else train.train(cfg, workdir, resume_step=resume_step))
  return run, evaluators.evaluate_run(run, workdir) if evaluate and run.completed else None


def _parse_flags(argv: list[str]) -> list[str]:
  flags.FLAGS.unparse_flags()  # each call of `run` starts from the defaults (tests call it in-process)
  _overrides[:] = [a for a in argv[1:] if a.startswith("--config.")]
  try:
    return flags.FLAGS([a for a in argv if not a.startswith("--config.")])
  except flags.Error as e:
    known = ", ".join(f"--{f.name}" for f in flags.FLAGS.get_key_flags_for_module(sys.modules[__name__]))
    _fail(f"{e}; flags: {known}, --config.KEY=VALUE")


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def main(argv: list[str], evaluate_only: bool = False) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  import jax  # pylint: disable=g-import-not-at-top
  from steerjax import checkpoint, data, train  # pylint: disable=g-import-not-at-top
  evaluate_only = evaluate_only or _EVAL_ONLY.value

  if _COORDINATOR.value:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  elif _DISTRIBUTED.value:
    jax.distributed.initialize()
  try:
    cfg, workdir, record, changes = prepare(_CONFIG.value, _overrides, _WORKDIR.value,
                                            jax.device_count(), _ALLOW_CHANGE.value)
    check_resume_step(workdir, _RESUME_STEP.value, evaluate_only)
    _lock = start(workdir, record, changes)  # held until this process exits
  except (config_lib.ConfigError, workdir_lock.LockedError) as e:
    _fail(str(e))
  except OSError as e:
    _fail(f"--workdir {_WORKDIR.value}: {e}; pass a folder you can write to")
  try:
    _, report = session(cfg, workdir, evaluate_only, resume_step=_RESUME_STEP.value)
  except (data.DatasetNotFoundError, data.DatasetMismatchError, data.UnreadableImageError,
          train.NoCheckpointError, checkpoint.CheckpointMismatchError) as e:
    _fail(str(e))
  except train.DivergedError as e:
    lower = cfg.optim.learning_rate / 10
    print(f"error: {e}: {resume_command(_CONFIG.value, _overrides, workdir, lower)}",
          file=sys.stderr)
    sys.exit(1)
  except checkpoint.CheckpointError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  except jax.errors.JaxRuntimeError as e:
    if jax.process_count() == 1:
      raise
    # A collective failed because another process of the run died. Exit at once: the normal
    # shutdown would wait for the dead process at a barrier until its heartbeat times out.
    print(f"error: process {jax.process_index()} of {jax.process_count()} lost another process "
          f"of this run ({str(e).splitlines()[0]}); the checkpoints in {workdir} are kept: rerun "
          "every process with the same command to resume", file=sys.stderr, flush=True)
    os._exit(1)  # pylint: disable=protected-access
  if report is None:
    return
  if jax.process_index() == 0:
    print(f"report: {os.path.join(workdir, 'report.md')} ({len(report)} numbers); headline:")
    for key in HEADLINE:
      if key in report:
        print(f"  {key}: {report[key]:.4g}")


def run(evaluate_only: bool = False, argv: list[str] | None = None) -> None:
  """The command line (`argv` defaults to sys.argv); always ends in SystemExit."""
  app.run(functools.partial(main, evaluate_only=evaluate_only), argv=argv, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
