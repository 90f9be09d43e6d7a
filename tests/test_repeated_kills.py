"""Ten SIGKILLs at random moments (mid-step, mid-save, mid-evaluation), each followed by a rerun
of the same command, end exactly where an uninterrupted run does."""

import json
import os
import signal
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from steerjax.evaluators import report as report_lib

from test_trainer import _cli, _final_params, _logged_steps

STEPS = 30
ARGS = [f"--config.total_steps={STEPS}", "--config.checkpoint_every=3", "--config.eval.every_steps=5",
        '--config.eval.evaluators=("knn","steering")', "--config.eval.max_examples=64"]


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(line).items() if not report_lib.is_wall_clock(k)} for line in f]


def _report(workdir):
  with open(os.path.join(workdir, "report.json")) as f:
    return {k: v for k, v in json.load(f).items() if not report_lib.is_wall_clock(k)}


def _save_in_flight(workdir):
  """An Orbax temporary folder, or a finished step folder whose manifest is not written yet."""
  ckpts = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(ckpts):
    return False
  return any("tmp" in d or (d.isdigit() and not os.path.exists(
      os.path.join(ckpts, d, "steerjax_manifest.json"))) for d in os.listdir(ckpts))


def _kill_at(proc, workdir, moment, after_step, rng):
  """SIGKILLs `proc` once it logged `after_step`: at once ("step"), at the next save in flight
  ("save"), or a random moment into the evaluation after the last step ("eval"). Returns what
  it hit, or "finished" when the run ended first."""
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    last = max(_logged_steps(workdir), default=0)
    if moment == "step" and last >= after_step:
      break
    if moment == "save" and last >= after_step and _save_in_flight(workdir):
      break
    if moment == "eval" and last == STEPS:
      time.sleep(float(rng.uniform(0.5, 8.0)))
      break
    time.sleep(0.005)
  if proc.poll() is not None:
    return "finished"
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  return moment


@pytest.mark.slow  # eleven-plus tiny sessions in subprocesses (~6 min on 2 cores)
def test_ten_sigkills_then_reruns_end_where_an_uninterrupted_run_does(tmp_path):
  straight = _cli(tmp_path / "straight", *ARGS)
  _, err = straight.communicate(timeout=900)
  assert straight.returncode == 0, err[-2000:]

  workdir, rng = tmp_path / "killed", np.random.default_rng(0)
  targets = sorted(rng.choice(np.arange(2, STEPS), 7, replace=False))
  plan = [("step" if i % 2 else "save", int(t)) for i, t in enumerate(targets)] + [("eval", STEPS)] * 3
  hits = [_kill_at(_cli(workdir, *ARGS), workdir, moment, after, rng) for moment, after in plan]
  final = _cli(workdir, *ARGS)
  _, err = final.communicate(timeout=900)
  assert final.returncode == 0, err[-2000:]
  assert hits.count("finished") <= 2, hits  # most kills landed before the run could finish

  assert _logged_steps(workdir) == _logged_steps(tmp_path / "straight")  # none lost, none twice
  assert _metrics(workdir) == _metrics(tmp_path / "straight")
  assert _report(workdir) == _report(tmp_path / "straight")
  a, b = _final_params(tmp_path / "straight", STEPS), _final_params(workdir, STEPS)
  for x, y in zip(ocp.tree.to_flat_dict(a).values(), ocp.tree.to_flat_dict(b).values()):
    np.testing.assert_array_equal(x, y)
