"""Bad input, fuzzed: every malformed command exits 2 with one line `error: ...`, and writes nothing.

The cases are generated from the config schema (`config.base_config()`), so a new key is fuzzed
the day it is added: an unknown near-miss of it, a wrong type, a negative, zero and huge value,
an unknown name. Each runs the real command line in-process (`main.run(argv=...)`, the function
`python -m steerjax.main` calls) against an existing workdir whose files and mtimes must not
change; training is replaced by a sentinel so that a bad value that slips through validation
fails the test at once instead of training. A handful run as real subprocesses to show that the
CLI path is the same.
"""

import contextlib
import io
import os
import subprocess
import sys

import ml_collections
import pytest

from steerjax import config as config_lib
from steerjax import data
from steerjax import main as main_lib
from steerjax import train as train_lib
from steerjax.augment import policies
from test_trainer import ROOT, TINY, _env

DEFAULT = os.path.join(ROOT, "configs", "default.py")
CONFIG_FILES = sorted(f for f in os.listdir(os.path.join(ROOT, "configs")) if f.endswith(".py"))
HUGE_INT, HUGE_FLOAT = 10**12, "1e12"

# Numeric keys where 0 means something (a default, "all", "off" or a weight of zero); every
# other numeric key must refuse 0. Negative and huge values are refused everywhere.
ZERO_OK = {"seed", "data.seed", "augment.size", "head.proj_layers", "head.equi_layers",
           "head.augself_hidden", "optim.weight_decay", "optim.momentum", "optim.warmup_epochs",
           "optim.warmup_steps", "eval.max_examples", "fit.ridge", "eval.pixel_probe_size", "eval.every_steps", "loss.ema_base", "eval.tta_policy.flip_p",
           "eval.tta_policy.grayscale_p", "eval.tta_policy.jitter_p"} | {
               k for k in config_lib.RANGES if k.startswith("loss.") and k.endswith(("weight", "coeff", "factor"))}
# Keys that take a name; the error must list what is allowed.
NAMES = {**config_lib.CHOICES, "augment.policy": policies.POLICY_NAMES,
         "augment.policy2": policies.POLICY_NAMES, "eval.tta_policy.base": policies.POLICY_NAMES,
         "data.name": data.SOURCES}
# Free text (paths, split names): any string is a valid type.
FREE_TEXT = {"data.data_dir", "data.root", "data.index_dir", "data.train_split", "data.val_split",
             "eval.ood_split", "eval.ood_baseline"}


def _leaves(node, prefix=""):
  for key, value in node.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from _leaves(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", value


def _nodes(node, prefix=""):
  yield prefix
  for key, value in node.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from _nodes(value, f"{prefix}{key}.")


SCHEMA = config_lib.base_config()
LEAVES = dict(_leaves(SCHEMA))


def _near_miss(name):
  """A typo a person makes: two neighbouring letters swapped (or a letter doubled)."""
  i = len(name) // 2
  swapped = name[:i - 1] + name[i] + name[i - 1] + name[i + 1:]
  return swapped if swapped != name else name + name[-1]


def _names(key, suffix=""):
  """What the error must say to name `key`: a policy's field is named within its policy."""
  if key.startswith("eval.tta_policy."):
    return ("config.eval.tta_policy", key.rpartition(".")[2])
  return (f"config.{key}{suffix}",)


class Case:
  """One malformed command: its extra argv, and what its error line must contain."""

  def __init__(self, id_, argv, *must, config=DEFAULT, workdir=None):
    self.id, self.argv, self.must, self.config, self.workdir = id_, argv, must, config, workdir


def _override_cases():
  for prefix in _nodes(SCHEMA):
    yield Case(f"unknown:{prefix}zzz", [f"--config.{prefix}zzz_unknown=1"], f"config.{prefix}zzz_unknown")
  yield Case("unknown:nested-under-unknown", ["--config.nosuch.child=1"], "config.nosuch")
  for key, value in LEAVES.items():
    parent, _, name = key.rpartition(".")
    typo = f"{parent}.{_near_miss(name)}" if parent else _near_miss(name)
    yield Case(f"near-miss:{key}", [f"--config.{typo}=1"], f"config.{typo}")
    yield Case(f"under-leaf:{key}", [f"--config.{key}.x=1"], f"config.{key}.x")
    if isinstance(value, bool):
      bad = ["maybe", "2"]
    elif isinstance(value, int):
      bad = ["abc", "1.5", "True", "'3'"]
    elif isinstance(value, float):
      bad = ["abc", "'0.5'", "True", "(1.0,)"]
    elif isinstance(value, tuple):
      bad = ["5", "(1, 2)" if not value or isinstance(value[0], str) else "('a', 'b')"]
    else:
      bad = []
    for text in bad:
      yield Case(f"type:{key}={text}", [f"--config.{key}={text}"], *_names(key))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      numbers = [-1, HUGE_INT] if isinstance(value, int) else [-1.0, HUGE_FLOAT, "1e999"]
      if key not in ZERO_OK:
        numbers.append(0)
      for number in numbers:
        yield Case(f"range:{key}={number}", [f"--config.{key}={number}"], *_names(key, "="))
  for key, allowed in NAMES.items():
    default = LEAVES[key]
    for bad in ("no_such_name", _near_miss(allowed[0]), (default or allowed[0]).upper()):
      yield Case(f"name:{key}={bad}", [f"--config.{key}={bad}"], *_names(key), repr(bad), *allowed)
  for bad in ("no_such_evaluator", "linear-probe", "KNN"):
    yield Case(f"name:eval.evaluators={bad}", [f"--config.eval.evaluators=('knn', '{bad}')"],
               f"config.eval.evaluators={bad!r}", *config_lib.EVALUATORS)
  yield Case("name:eval.evaluators-twice", ["--config.eval.evaluators=('knn', 'knn')"],
             "config.eval.evaluators", "at most once")
  yield Case("name:policy-dict-base", ["--config.augment.policy={'base': 'nope'}"],
             "config.augment.policy", *policies.POLICY_NAMES)
  yield Case("name:policy-dict-key", ["--config.augment.policy={'base': 'none', 'flip': 0.5}"],
             "config.augment.policy", "config file")
  yield Case("cross:batch-larger-than-data", ["--config.batch_size=1024"], "config.batch_size=1024",
             "synthetic3d")
  yield Case("cross:batch-not-divisible", ["--config.batch_size=0"], "config.batch_size=0")
  yield Case("cross:patch-not-dividing", ["--config.model.name=vit", "--config.model.patch_size=5"],
             "config.model.patch_size=5")
  yield Case("cross:pair-policy-with-policy2", ["--config.augment.policy=byol",
                                                "--config.augment.policy2=none"], "config.augment.policy2")
  yield Case("data:folder-missing-root", ["--config.data.name=folder", "--config.data.root=/no/such/dir"],
             "config.data.root='/no/such/dir'", "existing folder")
  yield Case("data:3diebench-no-root", ["--config.data.name=3diebench"], "config.data.root=''")
  yield Case("data:tfds-not-prepared", ["--config.data.name=cifar10", "--config.data.data_dir=/no/such/dir"],
             "config.data.name='cifar10'", "/no/such/dir", "tfds build")
  yield Case("override:no-value", ["--config.batch_size"], "--config.batch_size")
  yield Case("override:scalar-for-group", ["--config.optim=3"], "config.optim")
  yield Case("override:syntax", ["--config.eval.evaluators=('knn'"], "config.eval.evaluators")


def _file_cases(tmp):
  """Config files that are missing, unparsable, raise, add keys or assign wrong types."""
  def write(name, body):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
      f.write(body)
    return path

  yield Case("file:missing", [], os.path.join(tmp, "nope.py"), config=os.path.join(tmp, "nope.py"))
  yield Case("file:directory", [], tmp, config=tmp)
  path = write("syntax.py", "def get_config(arg):\n  return (\n")
  yield Case("file:syntax-error", [], path, "line", config=path)
  path = write("raises.py", "def get_config(arg):\n  return {}['x']\n")
  yield Case("file:raises", [], path, "KeyError", config=path)
  path = write("import_error.py", "import no_such_module_anywhere\n")
  yield Case("file:import-error", [], path, "no_such_module_anywhere", config=path)
  path = write("no_get_config.py", "x = 1\n")
  yield Case("file:no-get_config", [], path, "get_config", config=path)
  path = write("returns_dict.py", "def get_config(arg):\n  return {'seed': 0}\n")
  yield Case("file:returns-not-configdict", [], path, "ConfigDict", config=path)
  path = write("config.txt", "not python\n")
  yield Case("file:not-python", [], path, config=path)
  path = write("empty.py", "")
  yield Case("file:empty", [], path, "get_config", config=path)
  yield Case("file:empty-flag", [], "--config", config="")
  for name in CONFIG_FILES:
    spec = os.path.join(ROOT, "configs", name)
    yield Case(f"variant:{name}", [], "smoke", "'nope'", config=f"{spec}:nope")
  header = f"import importlib.util\nspec = importlib.util.spec_from_file_location('d', {DEFAULT!r})\n" \
           "d = importlib.util.module_from_spec(spec); spec.loader.exec_module(d)\n"
  for prefix in _nodes(SCHEMA):
    node = "c" + "".join(f".{p}" for p in prefix.strip(".").split(".") if p)
    path = write(f"extra_{prefix or 'top'}.py", header + "def get_config(arg):\n  c = d.get_config(arg)\n"
                 f"  {node}.zzz_unknown = 1\n  return c\n")
    yield Case(f"file:unknown-key:{prefix}", [], f"config.{prefix}zzz_unknown", config=path)
  for i, policy in enumerate(["{'base': 'nope'}", "{'flip': 0.5}", "{'flip_p': -1.0}", "{'flip_p': 'x'}",
                               "{'crop_scale': (0.5,)}", "{'jitter': (1.0, 1.0, 1.0, 0.9)}"]):
    for key in ("augment.policy", "augment.policy2"):
      path = write(f"policy_{key}_{i}.py", header + "import ml_collections\ndef get_config(arg):\n"
                   f"  c = d.get_config(arg)\n  c.{key} = ml_collections.ConfigDict({policy})\n  return c\n")
      yield Case(f"file:policy:{key}={policy}", [], f"config.{key}", config=path)
  for key, value in LEAVES.items():
    if key in ("augment.policy", "augment.policy2"):
      continue  # a name or a ConfigDict: checked by the name cases
    wrong = "'x'" if not isinstance(value, str) else "3"
    path = write(f"type_{key}.py", header + "import ml_collections\ndef get_config(arg):\n  c = d.get_config(arg)\n"
                 f"  with c.ignore_type():\n    c.{key} = {wrong}\n  return c\n")
    yield Case(f"file:type:{key}", [], f"config.{key}", config=path)


def _workdir_cases(tmp):
  afile = os.path.join(tmp, "a_file")
  with open(afile, "w") as f:
    f.write("x")
  yield Case("workdir:is-a-file", [], afile, workdir=afile)
  yield Case("workdir:under-a-file", [], afile, workdir=os.path.join(afile, "run"))
  yield Case("workdir:empty", [], "--workdir", workdir="")
  if os.geteuid() == 0:  # root writes anywhere a mode allows nothing; /proc takes no folders
    unwritable = "/proc/steerjax-no-such-dir/run"
  else:
    locked = os.path.join(tmp, "read_only")
    os.makedirs(locked, exist_ok=True)
    os.chmod(locked, 0o500)
    unwritable = os.path.join(locked, "run")
  yield Case("workdir:unwritable", [], "--workdir", workdir=unwritable)
  broken = os.path.join(tmp, "broken_config_json")
  os.makedirs(broken, exist_ok=True)
  with open(os.path.join(broken, "config.json"), "w") as f:
    f.write("{not json")
  yield Case("workdir:unreadable-config.json", [], os.path.join(broken, "config.json"), workdir=broken)


def _flag_cases():
  yield Case("flag:unknown", ["--confg=configs/default.py"], "confg", "--config", "--workdir")
  yield Case("flag:bad-int", ["--num_processes=two"], "num_processes")
  yield Case("flag:bad-bool", ["--allow_config_change=maybe"], "allow_config_change")
  yield Case("flag:bad-resume-step", ["--resume_step=last"], "resume_step")
  yield Case("flag:absent-resume-step", ["--resume_step=4"], "--resume_step 4", "available steps: ")
  yield Case("flag:resume-step-with-eval-only", ["--resume_step=5", "--eval_only"],
             "--resume_step is for training")


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
  tmp = str(tmp_path_factory.mktemp("inputs"))
  return [*_override_cases(), *_file_cases(tmp), *_workdir_cases(tmp), *_flag_cases()]


@pytest.fixture(scope="module")
def existing_workdir(tmp_path_factory):
  """A run's workdir (config.json, a checkpoint, metrics): no refused command may touch it."""
  workdir = tmp_path_factory.mktemp("existing")
  _, _, record, _ = main_lib.prepare(DEFAULT, TINY, str(workdir), 1)
  import json  # pylint: disable=g-import-not-at-top
  with open(workdir / "config.json", "w") as f:
    json.dump(record, f)
  (workdir / "checkpoints" / "5").mkdir(parents=True)
  (workdir / "checkpoints" / "5" / "state").write_bytes(b"\0" * 64)
  (workdir / "metrics.jsonl").write_text('{"step": 1}\n')
  return str(workdir)


def _tree(root):
  """Every path under root with its size and mtime (ns), root included."""
  out = {".": os.stat(root).st_mtime_ns}
  for dirpath, dirnames, filenames in os.walk(root):
    for name in dirnames + filenames:
      path = os.path.join(dirpath, name)
      st = os.stat(path)
      out[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns)
  return out


class _Accepted(Exception):
  """Raised in place of training: the command got past every check."""


def _argv(case, workdir):
  config = [] if case.config == "" else ["--config", case.config]
  workdir = workdir if case.workdir is None else case.workdir
  return ["steerjax.main", *config, f"--workdir={workdir}", "--allow_config_change", *TINY,
          *case.argv]


def _run_in_process(argv):
  err = io.StringIO()
  with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
    try:
      main_lib.run(argv=argv)
    except SystemExit as e:
      return e.code, err.getvalue()
  raise AssertionError(f"run() returned without SystemExit; stderr: {err.getvalue()!r}")


def _check(case, code, err):
  assert code == 2, f"{case.id}: exit {code}, stderr {err[-3000:]!r}"
  assert err.startswith("error: ") and err.endswith("\n") and err.count("\n") == 1, \
      f"{case.id}: stderr is not one 'error:' line: {err[-3000:]!r}"
  assert "Traceback" not in err
  for text in case.must:
    assert text in err, f"{case.id}: {text!r} not in {err!r}"


def test_there_are_at_least_200_cases_covering_every_kind(cases):
  kinds = {c.id.split(":")[0] for c in cases}
  assert len(cases) >= 200, len(cases)
  assert {"unknown", "near-miss", "type", "range", "name", "file", "variant", "workdir",
          "flag"} <= kinds
  for key, value in LEAVES.items():  # every key of the schema is fuzzed
    assert any(c.id == f"near-miss:{key}" for c in cases), key


def test_schema_declares_every_numeric_and_name_key():
  """A new key must say what it allows: a range, a set of names, or free text."""
  for key, value in LEAVES.items():
    if key.startswith("eval.tta_policy.") or isinstance(value, (bool, tuple)):
      continue  # the policy checks its own fields; tuples are checked by their elements
    if isinstance(value, (int, float)):
      assert key in config_lib.RANGES, f"{key} has no entry in config.RANGES"
    elif isinstance(value, str):
      assert key in NAMES or key in FREE_TEXT, f"{key}: name or free text?"
  assert set(config_lib.RANGES) <= set(LEAVES)


def test_every_bad_input_exits_2_with_one_line_and_writes_nothing(cases, existing_workdir, monkeypatch):
  def accepted(*args, **kwargs):
    raise _Accepted()
  monkeypatch.setattr(train_lib, "train", accepted)
  monkeypatch.setattr(train_lib, "restore", accepted)
  before = _tree(existing_workdir)
  failures = []
  for case in cases:
    try:
      code, err = _run_in_process(_argv(case, existing_workdir))
      _check(case, code, err)
    except _Accepted:
      failures.append(f"{case.id}: accepted")
    except AssertionError as e:
      failures.append(str(e))
    except Exception as e:  # pylint: disable=broad-except
      failures.append(f"{case.id}: {type(e).__name__}: {e}")
    after = _tree(existing_workdir)
    if after != before:
      failures.append(f"{case.id}: wrote into the workdir: {sorted(set(after.items()) ^ set(before.items()))}")
      before = after
  assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures)


def test_good_input_still_gets_to_training(existing_workdir, monkeypatch):
  """The sentinel is reached by a valid command, so the fuzz above tests the checks, not a crash."""
  def accepted(*args, **kwargs):
    raise _Accepted()
  monkeypatch.setattr(train_lib, "train", accepted)
  with pytest.raises(_Accepted):
    main_lib.run(argv=["steerjax.main", "--config", DEFAULT, f"--workdir={existing_workdir}",
                       "--allow_config_change", *TINY])


@pytest.mark.parametrize("key", sorted(config_lib.RANGES))
def test_range_bounds_are_accepted(key):
  cfg = config_lib.base_config()
  cfg.batch_size = 1  # so that the smallest dataset still holds a batch
  parent, _, name = key.rpartition(".")
  node = cfg[parent] if parent else cfg
  low, high = config_lib.RANGES[key]
  for bound in (low, high):
    if not isinstance(bound, config_lib.Open):
      node[name] = type(node[name])(bound)
      if key == "batch_size":  # a batch of 2^20 needs a dataset that large
        cfg.data.num_objects, cfg.data.views_per_object = 100_000, 1000
      config_lib.validate(cfg)


SUBPROCESS_IDS = ("range:batch_size=-1", "name:method=no_such_name", "file:syntax-error",
                  "workdir:is-a-file", "flag:unknown")


def test_cli_subprocess_gives_the_same_line(cases, existing_workdir):
  before = _tree(existing_workdir)
  by_id = {c.id: c for c in cases}
  for case_id in SUBPROCESS_IDS:
    case = by_id[case_id]
    argv = _argv(case, existing_workdir)
    proc = subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=120)
    _check(case, proc.returncode, proc.stderr)
    assert proc.stdout == ""
    with contextlib.suppress(SystemExit):
      assert _run_in_process(argv)[1] == proc.stderr, case_id
  assert _tree(existing_workdir) == before


@pytest.mark.parametrize("override, expected", [
    ("--config.batch_size=16", "config.batch_size=16 is larger than the "),
    ("--config.data.pairs=true", "config.data.pairs=True needs a dataset with several views"),
])
def test_data_that_cannot_serve_the_config_is_one_line(tmp_path, override, expected):
  """Found only once the data is listed (a folder of 4 images), still before any compilation."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  (tmp_path / "images").mkdir()
  for k in range(4):
    Image.fromarray(np.full((8, 8, 3), 40 * k, np.uint8)).save(tmp_path / "images" / f"{k}.png")
  code, err = _run_in_process(["steerjax.main", "--config", DEFAULT, f"--workdir={tmp_path / 'run'}",
                               *TINY, "--config.data.name=folder", f"--config.data.root={tmp_path / 'images'}",
                               "--config.batch_size=2", override])
  assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err[-3000:]
  assert expected in err
