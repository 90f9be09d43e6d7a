"""Two real JAX processes on this machine (gloo collectives) train like one process."""

import json
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from steerjax.evaluators import report as report_lib

from test_trainer import ROOT, TINY, _env


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _main(workdir, *extra):
  return [sys.executable, "-m", "steerjax.main", "--config", "configs/default.py", "--workdir",
          str(workdir), *TINY, "--config.total_steps=4", "--config.checkpoint_every=2", *extra]


def _state(workdir, like=None):
  """The step-4 state; `like` gives the target shapes and shardings (any topology restores)."""
  path = os.path.join(workdir, "checkpoints", "4", "default")
  target = None if like is None else jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
  return ocp.StandardCheckpointer().restore(path, target)


@pytest.mark.slow  # ~70 s on 2 cores: three processes compile the train step at once
def test_two_processes_match_one(tmp_path):
  env = _env(JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo")
  address = f"127.0.0.1:{_free_port()}"
  procs = [subprocess.Popen(_main(tmp_path / "multi", "--coordinator_address", address,
                                  "--num_processes", "2", "--process_id", str(i)),
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for i in range(2)]
  single = subprocess.run(_main(tmp_path / "single"), cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
  for p in procs:
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-2000:]
  assert single.returncode == 0, single.stderr[-2000:]
  one = _state(tmp_path / "single")
  # Saved by two processes, restored here by one: the checkpoint is not tied to its topology.
  multi = ocp.tree.to_flat_dict(_state(tmp_path / "multi", like=one)["params"])
  one = ocp.tree.to_flat_dict(one["params"])
  assert multi.keys() == one.keys()
  for key in one:
    np.testing.assert_allclose(multi[key], one[key], rtol=2e-4, atol=2e-5, err_msg=str(key))


@pytest.mark.slow  # ~2 min on 2 cores: one training run, then 2 evaluating processes
def test_two_process_evaluation_reports_what_one_does(tmp_path):
  """Each process streams its share of every split; the gathered report equals one process's."""
  env = _env(JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo")
  evaluate = ["--config.eval.evaluators=['linear_probe','knn','rotation_r2']",
              "--config.eval.probe_epochs=5", "--config.eval.r2_steps=20", "--config.eval.batch_size=24"]
  single = subprocess.run(_main(tmp_path / "single", *evaluate), cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
  assert single.returncode == 0, single.stderr[-2000:]
  shutil.copytree(tmp_path / "single", tmp_path / "multi", ignore=shutil.ignore_patterns("report*"))
  address = f"127.0.0.1:{_free_port()}"
  procs = [subprocess.Popen(_main(tmp_path / "multi", *evaluate, "--eval_only", "--coordinator_address", address,
                                  "--num_processes", "2", "--process_id", str(i)),
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for i in range(2)]
  for p in procs:
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-2000:]
  reports = [json.load(open(tmp_path / d / "report.json")) for d in ("single", "multi")]
  assert {"linear_probe_top1", "knn_top1", "rotation_r2_all"} <= reports[0].keys() == reports[1].keys()
  for key, value in reports[0].items():
    if not report_lib.is_wall_clock(key):
      np.testing.assert_allclose(reports[1][key], value, rtol=1e-3, atol=1e-4, err_msg=key)


@pytest.mark.slow  # ~2 min on 2 cores: two processes train, then one resumes
def test_two_process_checkpoint_resumes_in_one_process(tmp_path):
  """Two processes train 2 steps; one process resumes to step 4 and ends where one process
  training all 4 steps ends (to the tolerance two- vs one-process training already has)."""
  from test_trainer import _logged_steps  # pylint: disable=g-import-not-at-top
  env = _env(JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo")
  address = f"127.0.0.1:{_free_port()}"
  procs = [subprocess.Popen(_main(tmp_path / "multi", "--config.total_steps=2", "--coordinator_address",
                                  address, "--num_processes", "2", "--process_id", str(i)),
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True) for i in range(2)]
  for p in procs:
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-2000:]
  for workdir, extra in ((tmp_path / "multi", ["--allow_config_change"]), (tmp_path / "single", [])):
    proc = subprocess.run(_main(workdir, *extra), cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
  assert _logged_steps(tmp_path / "multi") == [1, 2, 3, 4]
  one = _state(tmp_path / "single")
  resumed = ocp.tree.to_flat_dict(_state(tmp_path / "multi", like=one)["params"])
  one = ocp.tree.to_flat_dict(one["params"])
  for key in one:
    np.testing.assert_allclose(resumed[key], one[key], rtol=2e-4, atol=2e-5, err_msg=str(key))


@pytest.mark.slow  # ~2 min on 2 cores: a 2-process run, one process killed, then both rerun
def test_killing_one_process_stops_the_other_with_a_clear_message_and_both_resume(tmp_path):
  import signal, time  # pylint: disable=g-import-not-at-top,multiple-imports
  from test_trainer import _logged_steps  # pylint: disable=g-import-not-at-top
  env = _env(JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo")

  def launch():
    address = f"127.0.0.1:{_free_port()}"
    return [subprocess.Popen(_main(tmp_path, "--coordinator_address", address, "--num_processes", "2",
                                   "--process_id", str(i), "--config.total_steps=40",
                                   '--config.eval.evaluators=("knn",)'),
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for i in range(2)]

  procs, deadline = launch(), time.time() + 400
  while max(_logged_steps(tmp_path), default=0) < 3 and time.time() < deadline:
    assert procs[0].poll() is None, procs[0].communicate()[1][-2000:]
    time.sleep(0.05)
  procs[1].send_signal(signal.SIGKILL)
  killed_at = time.time()
  _, err = procs[0].communicate(timeout=120)  # no hang
  procs[1].communicate()
  assert time.time() - killed_at < 30, "the surviving process waited for the dead one"
  assert procs[0].returncode == 1
  lines = [l for l in err.splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and "lost another process of this run" in lines[0], err[-2000:]
  assert max(_logged_steps(tmp_path)) < 40

  procs = launch()
  for p in procs:
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-2000:]
  assert _logged_steps(tmp_path) == list(range(1, 41))  # resumed, every step logged once
