"""Faults injected for real: changed configs, concurrent runs, corrupt or failed checkpoints."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from steerjax import config as config_lib
from steerjax import main as main_lib
from steerjax import workdir_lock
from test_trainer import ROOT, TINY, _cli, _env

DEFAULT = os.path.join(ROOT, "configs/default.py")


def _saved_workdir(tmp_path, overrides):
  """A workdir whose config.json is what a run with `overrides` wrote."""
  cfg, _, record, _ = main_lib.prepare(DEFAULT, overrides, str(tmp_path), 1)
  with open(tmp_path / "config.json", "w") as f:
    json.dump(record, f)
  return tmp_path


# --- changed config in an existing workdir ----------------------------------------------------

def test_changed_training_keys_refuse_in_one_line_listing_them(tmp_path):
  workdir = _saved_workdir(tmp_path, TINY)
  with pytest.raises(config_lib.ConfigError) as e:
    main_lib.prepare(DEFAULT, TINY + ["--config.optim.learning_rate=0.5", "--config.seed=3"],
                     str(workdir), 1)
  message = str(e.value)
  assert "\n" not in message
  assert "optim.learning_rate (0.002 -> 0.5)" in message and "seed (0 -> 3)" in message
  assert "--allow_config_change" in message
  # Accepted with the flag, and reported so main can record it.
  _, _, _, changes = main_lib.prepare(DEFAULT, TINY + ["--config.seed=3"], str(workdir), 1,
                                      allow_change=True)
  assert changes == {"seed": (0, 3)}


def test_evaluation_only_keys_may_change(tmp_path):
  workdir = _saved_workdir(tmp_path, TINY)
  _, _, _, changes = main_lib.prepare(
      DEFAULT, TINY + ["--config.eval.evaluators=('knn',)", "--config.progress=true",
                       "--config.log_every=5", "--config.eval.knn_k=3"], str(workdir), 1)
  assert changes == {}


def test_cli_refuses_changed_config_exit_2_and_leaves_workdir_alone(tmp_path):
  workdir = _saved_workdir(tmp_path, TINY)
  before = (workdir / "config.json").read_text()
  proc = _cli(workdir, "--config.batch_size=8")
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 2, err[-2000:]
  assert err.count("\n") == 1 and err.startswith("error: ") and "batch_size (16 -> 8)" in err
  assert (workdir / "config.json").read_text() == before
  assert sorted(os.listdir(workdir)) == ["config.json"]


@pytest.mark.slow  # trains two steps in a subprocess (~40 s on 2 cores)
def test_cli_allow_config_change_records_the_change(tmp_path):
  workdir = _saved_workdir(tmp_path, TINY + ["--config.total_steps=2"])
  proc = _cli(workdir, "--config.total_steps=2", "--config.seed=5", "--allow_config_change")
  _, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-2000:]
  with open(workdir / "config_changes.jsonl") as f:
    assert json.loads(f.readline())["changes"] == {"seed": [0, 5]}
  assert json.loads((workdir / "config.json").read_text())["seed"] == 5


# --- two runs, one workdir ---------------------------------------------------------------------

HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from steerjax import workdir_lock
    lock = workdir_lock.acquire(sys.argv[1])
    print("locked", flush=True)
    time.sleep(600)
""")


def _holder(workdir):
  proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(workdir)], cwd=ROOT, env=_env(),
                          stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "locked"
  return proc


def test_second_run_refuses_naming_holder_and_killed_holder_leaves_no_stale_lock(tmp_path):
  holder = _holder(tmp_path)
  try:
    with pytest.raises(workdir_lock.LockedError) as e:
      workdir_lock.acquire(str(tmp_path))
    assert f"pid {holder.pid} on host {socket.gethostname()}" in str(e.value)
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  # The killed holder's file is still there, but its lock died with it.
  assert os.path.exists(tmp_path / "run.0.lock")
  lock = workdir_lock.acquire(str(tmp_path))
  assert json.loads((tmp_path / "run.0.lock").read_text())["pid"] == os.getpid()
  lock.close()


def test_cli_second_run_exits_2_naming_the_holder(tmp_path):
  holder = _holder(tmp_path)
  try:
    proc = _cli(tmp_path)
    out, err = proc.communicate(timeout=120)
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  assert proc.returncode == 2
  assert err.startswith("error: ") and err.count("\n") == 1 and f"pid {holder.pid}" in err
  assert "Traceback" not in out + err
