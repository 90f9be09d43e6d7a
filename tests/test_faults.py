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


# --- corrupt, partial and failed checkpoints ---------------------------------------------------

CKPT_SCRIPT = textwrap.dedent("""
    import os, resource, signal, sys
    import numpy as np
    from steerjax import checkpoint
    directory, mode = sys.argv[1], sys.argv[2]
    state = {"w": np.arange(20000, dtype=np.float32), "b": np.ones(3, np.float32)}
    ck = checkpoint.Checkpointer(directory, save_every=1, keep=3)
    if mode == "save":
      for step in (1, 2):
        ck.save(step, {k: v + step for k, v in state.items()})
      ck.close()
    elif mode == "restore":
      step, got = ck.restore_latest_good({k: np.zeros_like(v) for k, v in state.items()},
                                         directory + "_bad")
      print("restored", step, float(got["w"][0]), flush=True)
    elif mode == "other_model":  # another width: same names, other shapes; then another tree
      for wanted in ({"w": np.zeros(10, np.float32), "b": np.zeros(3, np.float32)},
                     {"w": np.zeros(20000, np.float32), "b": np.zeros(3, np.float32),
                      "extra": np.zeros(1, np.float32)}):
        try:
          ck.restore_latest_good(wanted, directory + "_bad")
        except checkpoint.CheckpointMismatchError as e:
          print("error:", e, flush=True)
    elif mode == "full_disk":
      ck.save(1, state)
      ck.close()
      ck = checkpoint.Checkpointer(directory, save_every=1, keep=3)
      signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
      resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
      try:
        ck.save(2, {k: v + 2 for k, v in state.items()})
        ck.close()
      except checkpoint.CheckpointError as e:
        print("error:", e, flush=True)
""")


def _ckpt(directory, mode):
  proc = subprocess.run([sys.executable, "-c", CKPT_SCRIPT, str(directory), mode], cwd=ROOT,
                        env=_env(), capture_output=True, text=True, timeout=120)
  return proc


def _largest_file(step_dir):
  files = [os.path.join(r, n) for r, _, ns in os.walk(step_dir) for n in ns
           if n != "steerjax_manifest.json"]
  return max(files, key=os.path.getsize)


@pytest.mark.parametrize("fault", ["truncate", "delete", "garble"])
def test_bad_newest_checkpoint_is_named_and_previous_one_used(tmp_path, fault):
  directory = tmp_path / "checkpoints"
  assert _ckpt(directory, "save").returncode == 0
  victim = _largest_file(directory / "2")
  if fault == "truncate":
    with open(victim, "r+b") as f:
      f.truncate(os.path.getsize(victim) // 2)
  elif fault == "delete":
    os.remove(victim)
  else:
    with open(victim, "r+b") as f:
      f.seek(os.path.getsize(victim) // 2)
      f.write(b"\x5a" * 16)
  proc = _ckpt(directory, "restore")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert f"checkpoint {directory / '2'} is bad (" in proc.stdout
  assert "restored 1 1.0" in proc.stdout  # step 1's values, not zeros and not step 2's
  assert os.path.isdir(f"{directory}_bad/2") and not os.path.exists(directory / "2")


def test_checkpoint_of_another_model_is_refused_and_left_in_place(tmp_path):
  """Intact checkpoints written for another width or model are not 'bad': they stay where they
  are, and the error names the first array that differs."""
  directory = tmp_path / "checkpoints"
  assert _ckpt(directory, "save").returncode == 0
  proc = _ckpt(directory, "other_model")
  lines = [l for l in proc.stdout.splitlines() if l.startswith("error:")]
  assert len(lines) == 2, proc.stdout + proc.stderr[-2000:]
  assert "written for another model (w is (20000,) there, (10,) here)" in lines[0]
  assert "(it has no extra)" in lines[1]
  assert sorted(os.listdir(directory)) == ["1", "2"] and not os.path.exists(f"{directory}_bad")


def test_all_checkpoints_bad_refuses_rather_than_starting_over(tmp_path):
  directory = tmp_path / "checkpoints"
  assert _ckpt(directory, "save").returncode == 0
  for step in ("1", "2"):
    os.remove(_largest_file(directory / step))
  proc = _ckpt(directory, "restore")
  assert proc.returncode != 0 and "none of the checkpoints [2, 1]" in proc.stderr


def test_failed_save_keeps_previous_checkpoint_and_says_so(tmp_path):
  directory = tmp_path / "checkpoints"
  proc = _ckpt(directory, "full_disk")
  assert proc.returncode == 0, proc.stderr[-2000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("error:")]
  assert len(line) == 1 and "saving checkpoint step 2" in line[0] and "step 1 is intact" in line[0]
  restored = _ckpt(directory, "restore")
  assert "restored 1 0.0" in restored.stdout and "is bad" not in restored.stdout


@pytest.mark.slow  # two tiny training runs in subprocesses (~70 s on 2 cores)
def test_run_with_corrupt_newest_checkpoint_resumes_from_previous_bit_identically(tmp_path):
  import numpy as np  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from test_trainer import _final_params, _logged_steps  # pylint: disable=g-import-not-at-top
  steps = ["--config.total_steps=8", "--config.checkpoint_every=4"]
  proc = _cli(tmp_path, *steps)
  _, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-2000:]
  reference = _final_params(tmp_path, 8)
  with open(_largest_file(tmp_path / "checkpoints" / "8"), "r+b") as f:
    f.truncate(10)
  proc = _cli(tmp_path, *steps)
  out, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-2000:]
  assert f"checkpoint {tmp_path / 'checkpoints' / '8'} is bad" in out
  assert _logged_steps(tmp_path) == list(range(1, 9))
  again = _final_params(tmp_path, 8)
  for x, y in zip(ocp.tree.to_flat_dict(reference).values(), ocp.tree.to_flat_dict(again).values()):
    np.testing.assert_array_equal(x, y)


# --- other topology ----------------------------------------------------------------------------

TOPOLOGY_SCRIPT = textwrap.dedent("""
    import sys
    import jax, numpy as np
    from steerjax import checkpoint, train
    directory, mode = sys.argv[1], sys.argv[2]

    def state(mesh, seed):
      # What the train loop checkpoints (replicated arrays of several dtypes and shapes), plus one
      # array sharded over the devices, so restoring must also re-split it.
      rng = np.random.default_rng(seed)
      rep, shard = train.replicated(mesh), train.batch_sharding(mesh)
      return {"step": jax.device_put(np.int32(seed), rep),
              "params": {"w": jax.device_put(rng.normal(size=(3, 5)).astype(np.float32), rep),
                         "b": jax.device_put(rng.normal(size=(7,)).astype(np.float16), rep)},
              "rng": jax.device_put(rng.integers(0, 2**32, 2, dtype=np.uint32), rep),
              "sharded": jax.device_put(rng.normal(size=(8, 3)).astype(np.float32), shard)}

    if mode == "save":
      assert jax.device_count() == 4
      ck = checkpoint.Checkpointer(directory, save_every=1, keep=2)
      ck.save(1, state(train.make_mesh(), seed=1))
      ck.close()
    else:
      for n in map(int, mode.split(",")):
        mesh = train.make_mesh(jax.devices()[:n])
        ck = checkpoint.Checkpointer(directory, save_every=1, keep=2)
        fresh = state(mesh, seed=0)
        start, got = ck.restore_latest_good(fresh, directory + "_bad")
        ck.close()
        assert start == 1
        for want, have, like in zip(jax.tree.leaves(jax.device_get(state(train.make_mesh(), seed=1))),
                                    jax.tree.leaves(got), jax.tree.leaves(fresh)):
          np.testing.assert_array_equal(np.asarray(have), want)
          assert have.dtype == want.dtype and have.sharding == like.sharding, (have.sharding, like.sharding)
        print("restored on", n, "of", jax.device_count(), "devices", flush=True)
""")


def _topology(directory, mode, devices):
  return subprocess.run([sys.executable, "-c", TOPOLOGY_SCRIPT, str(directory), mode], cwd=ROOT,
                        env=_env(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}"),
                        capture_output=True, text=True, timeout=600)


def test_checkpoint_from_4_devices_restores_on_2_and_1_devices(tmp_path):
  """Written on 4 (emulated) devices; restored exactly with the 2- or 1-device mesh's shardings.

  A train-state-like tree for CI speed; the slow test below resumes real runs the same way.
  """
  saved = _topology(tmp_path / "checkpoints", "save", 4)
  assert saved.returncode == 0, saved.stderr[-3000:]
  restored = _topology(tmp_path / "checkpoints", "2,1", 2)
  assert restored.returncode == 0, restored.stderr[-3000:]
  assert restored.stdout.splitlines() == ["restored on 2 of 2 devices", "restored on 1 of 2 devices"]


@pytest.mark.slow  # three tiny training sessions in subprocesses (~2 min on 2 cores)
def test_cli_run_on_4_devices_resumes_on_2_then_1(tmp_path):
  from test_trainer import _logged_steps  # pylint: disable=g-import-not-at-top
  for devices, steps in ((4, 2), (2, 3), (1, 4)):
    proc = subprocess.run(
        [sys.executable, "-m", "steerjax.main", "--config", "configs/default.py", "--workdir",
         str(tmp_path), *TINY, f"--config.total_steps={steps}", "--config.checkpoint_every=1",
         "--allow_config_change"], cwd=ROOT, capture_output=True, text=True, timeout=600,
        env=_env(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "is bad" not in proc.stdout
  assert _logged_steps(tmp_path) == [1, 2, 3, 4]  # each session went on from the last one's step


# --- divergence --------------------------------------------------------------------------------

HEALTHY = {"loss": 4.2, "grad_norm": 0.3, "param_norm": 30.0, "update_ratio": 0.01}


@pytest.mark.parametrize("bad, reason", [
    ({"loss": float("nan")}, "loss nan"),
    ({"grad_norm": float("inf")}, "grad_norm inf"),
    ({"param_norm": float("inf")}, "param_norm inf"),
    ({"update_ratio": 3e4}, "moved the weights by 3e+04 times their norm"),
    ({"update_ratio": float("nan")}, "moved the weights by nan times"),
])
def test_divergence_names_what_exploded(bad, reason):
  from steerjax import train  # pylint: disable=g-import-not-at-top
  assert train.divergence(HEALTHY) is None
  assert train.divergence({**HEALTHY, "update_ratio": 1.0}) is None
  assert reason in train.divergence({**HEALTHY, **bad})


def _error_line(err):
  lines = [l for l in err.splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
  return lines[0]


def test_absurd_learning_rate_stops_at_once_saving_nothing_and_says_how_to_rerun(tmp_path):
  proc = _cli(tmp_path, "--config.total_steps=50", "--config.checkpoint_every=1",
              "--config.optim.name=sgd", "--config.optim.learning_rate=1e6",
              "--config.optim.warmup_steps=0")
  _, err = proc.communicate(timeout=600)
  assert proc.returncode == 1
  line = _error_line(err)
  assert "training diverged at step 0 (the update moved the weights by" in line
  assert "no checkpoint was saved before it" in line
  assert "--config.optim.learning_rate=100000 --allow_config_change" in line
  assert not [d for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()]


def test_resume_step_that_does_not_exist_lists_the_available_ones(tmp_path):
  for step in ("2", "4"):
    os.makedirs(tmp_path / "checkpoints" / step)
  proc = _cli(tmp_path, "--resume_step=3")
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 2
  assert _error_line(err) == (f"error: --resume_step 3: {tmp_path / 'checkpoints'} holds no checkpoint "
                              "of that step; available steps: 2, 4")
  assert sorted(os.listdir(tmp_path)) == ["checkpoints"]  # no config.json, no lock


@pytest.mark.slow  # four tiny training sessions in subprocesses (~2 min on 2 cores)
def test_divergence_keeps_healthy_checkpoints_and_a_lower_rate_resumes_from_them(tmp_path):
  import shlex  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from test_trainer import _final_params, _logged_steps  # pylint: disable=g-import-not-at-top

  def run(*args):
    proc = _cli(tmp_path, "--config.checkpoint_every=2", "--config.keep_checkpoints=3", *args)
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err

  def same(a, b):
    for x, y in zip(ocp.tree.to_flat_dict(a).values(), ocp.tree.to_flat_dict(b).values()):
      np.testing.assert_array_equal(x, y)

  code, _, err = run("--config.total_steps=6")
  assert code == 0, err[-2000:]
  reference = _final_params(tmp_path, 6)
  # Going back to an earlier checkpoint sets the newer ones aside and retrains their steps exactly.
  code, out, err = run("--config.total_steps=6", "--resume_step=2")
  assert code == 0, err[-2000:]
  assert "resuming from step 2: checkpoint 4 moved to" in out and "checkpoint 6 moved to" in out
  assert sorted(os.listdir(tmp_path / "bad_checkpoints")) == ["4", "6"]
  same(reference, _final_params(tmp_path, 6))
  assert _logged_steps(tmp_path) == [1, 2, 3, 4, 5, 6]

  # An absurd learning rate: stops at its first step, before saving it; step 6 is untouched.
  code, _, err = run("--config.total_steps=10", "--config.optim.learning_rate=1e6", "--allow_config_change")
  assert code == 1
  line = _error_line(err)
  assert "training diverged at step 6 (" in line and "all from before it: step 2, 4, 6;" in line
  assert "resume from step 6 with a lower learning rate" in line
  assert sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()) == [2, 4, 6]
  same(reference, _final_params(tmp_path, 6))

  # The command it suggests, with a sane rate instead of a tenth of the absurd one, trains on.
  command = shlex.split(line[line.index("python -m steerjax.main"):])
  assert command[:3] == ["python", "-m", "steerjax.main"] and "--allow_config_change" in command
  assert "--config.optim.learning_rate=100000" in command and "--config.total_steps=10" in command
  command = [a.replace("=100000", "=0.002") if a.startswith("--config.optim.learning_rate") else a
             for a in command]
  proc = subprocess.run([sys.executable, *command[1:]], cwd=ROOT, env=_env(), capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert _logged_steps(tmp_path) == list(range(1, 11))
  with open(tmp_path / "metrics.jsonl") as f:
    records = [json.loads(l) for l in f]
  assert all(np.isfinite(r["loss"]) and r["update_ratio"] <= 1 for r in records)
