"""The main job: config errors, sharded == single-device step, exact resume, SIGTERM."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from steerjax import config as config_lib
from steerjax import main as main_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A run small enough for tests: few objects, an eighth-width ResNet-18, no evaluation.
TINY = ["--config.data.num_objects=40", "--config.data.views_per_object=4",
        "--config.model.width_multiplier=0.125", "--config.batch_size=16",
        "--config.head.proj_hidden=32", "--config.head.proj_dim=16",
        "--config.eval.evaluators=()", "--config.progress=false", "--config.log_every=1"]


def _env(**extra):
  """The subprocesses compile at XLA's lowest CPU optimisation level (compiling dominates these
  tiny runs; a run and the run it is compared with always share the flags); `XLA_FLAGS` adds."""
  flags = [os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0", extra.pop("XLA_FLAGS", "")]
  return dict(os.environ, PYTHONUNBUFFERED="1", XLA_FLAGS=" ".join(f for f in flags if f), **extra)


def _cli(workdir, *args, **popen):
  cmd = [sys.executable, "-m", "steerjax.main", "--config", "configs/default.py",
         "--workdir", str(workdir), *TINY, *args]
  return subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, **popen)


def _final_params(workdir, step):
  restored = ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step), "default"))
  return restored["params"]


def _logged_steps(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line)["step"] for line in f if line.strip()]


# --- config validation -----------------------------------------------------------------------

@pytest.mark.parametrize("override, expected", [
    ("--config.optim.learning_rate=-1", "config.optim.learning_rate=-1.0 is not allowed; expected a number in (0, 1e+06]"),
    ("--config.optim.lr=0.1", "config.optim.lr is not a known key"),
    ("--config.batch_size=abc", "config.batch_size='abc'"),
    ("--config.method=simclrr", "one of supervised, steerable, simclr"),
    ("--config.model.name=vgg", "config.model.name='vgg' is not allowed; expected one of resnet18, resnet50, resnet18_sie, resnet50_sie, vit, mixer"),
    ("--config.augment.policy=autoaugment", "config.augment.policy='autoaugment' is not allowed"),
    ("--config.head.proj_output=bias", "expected one of bn, linear, linear_bias"),
])
def test_bad_override_is_one_line_naming_the_key(override, expected):
  cfg = main_lib.load_config(os.path.join(ROOT, "configs/default.py"))
  with pytest.raises(config_lib.ConfigError, match=None) as e:
    main_lib.apply_overrides(cfg, [override])
    config_lib.validate(cfg)
  assert expected in str(e.value) and "\n" not in str(e.value)


def test_batch_must_divide_device_count():
  cfg = config_lib.base_config()
  cfg.batch_size = 6
  with pytest.raises(config_lib.ConfigError, match="multiple of the device count"):
    config_lib.validate(cfg, num_devices=4)
  config_lib.validate(cfg, num_devices=3)


def test_unknown_key_in_config_file_suggests_the_right_one():
  cfg = config_lib.base_config()
  with cfg.unlocked():
    cfg.optim.warmup_step = 3
  with pytest.raises(config_lib.ConfigError, match="did you mean optim.warmup_steps"):
    config_lib.validate(cfg)


def test_cli_config_error_exits_2_without_traceback(tmp_path):
  proc = _cli(tmp_path, "--config.optim.learning_rate=-0.5")
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 2
  assert err.strip() == ("error: config.optim.learning_rate=-0.5 is not allowed; "
                         "expected a number in (0, 1e+06]")
  assert "Traceback" not in err + out


# --- sharding ----------------------------------------------------------------------------------

# SGD, not the default AdamW: Adam's first update is lr * sign(g), so a gradient entry that is zero
# up to rounding flips by 2 lr between reduction orders; SGD's update is linear in the gradient, so
# comparing updates leaf by leaf (relative to each leaf's largest, give or take float32 rounding of
# the parameter itself) compares the gradients themselves.
SHARDED_VS_SINGLE = textwrap.dedent("""
    import jax, numpy as np
    from steerjax import config as config_lib, train
    cfg = config_lib.base_config()
    cfg.data.num_objects, cfg.data.views_per_object = 40, 4
    cfg.model.width_multiplier, cfg.batch_size = 0.125, 16
    cfg.head.proj_hidden, cfg.head.proj_dim = 32, 16
    cfg.optim.name = "sgd"
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
      mesh = train.make_mesh(devices)
      _, method, model, loader, tx, _, state, _, _ = train.setup(cfg, mesh)
      step = train.make_train_step(method, model, tx, mesh, cfg.total_steps)
      start = jax.device_get(state.params)
      for s in range(2):
        state, metrics = step(state, train.global_batch(loader.batch(s), mesh))
      results.append((start, jax.device_get(state.params), float(metrics["loss"])))
    (start, p1, l1), (_, p4, l4) = results
    assert len(jax.devices()) == 4
    np.testing.assert_allclose(l1, l4, rtol=1e-5)
    for p0, a, b in zip(*map(jax.tree.leaves, (start, p1, p4))):
      update = a - p0
      rounding = 4 * np.finfo(np.float32).eps * np.abs(p0).max()
      np.testing.assert_allclose(b - p0, update, rtol=1e-3, atol=1e-3 * np.abs(update).max() + rounding)
    print("OK", l1, l4)
""")


def test_four_device_step_equals_single_device_step():
  proc = subprocess.run([sys.executable, "-c", SHARDED_VS_SINGLE], cwd=ROOT, capture_output=True,
                        text=True, timeout=600,
                        env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=4"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.startswith("OK")


# --- preemption and resume -------------------------------------------------------------------

def _wait_for_step(proc, workdir, step, timeout=300):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if max(_logged_steps(workdir), default=0) >= step:
      return
    if proc.poll() is not None:
      raise AssertionError(f"run ended early: {proc.stderr.read()[-2000:]}")
    time.sleep(0.02)
  raise AssertionError("timed out waiting for training to progress")


def test_resume_after_sigkill_is_bit_identical(tmp_path):
  steps = ["--config.total_steps=24", "--config.checkpoint_every=4", "--config.eval.every_steps=6"]
  straight = _cli(tmp_path / "straight", *steps)
  _, err = straight.communicate(timeout=600)
  assert straight.returncode == 0, err[-2000:]

  killed_dir = tmp_path / "killed"
  proc = _cli(killed_dir, *steps)
  _wait_for_step(proc, killed_dir, 10)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  assert proc.returncode == -signal.SIGKILL
  interrupted_at = max(_logged_steps(killed_dir))
  assert interrupted_at < 24, "the run finished before it could be killed"

  resumed = _cli(killed_dir, *steps)
  _, err = resumed.communicate(timeout=600)
  assert resumed.returncode == 0, err[-2000:]
  # The log holds each step once: lines after the restored checkpoint were replaced.
  assert _logged_steps(killed_dir) == list(range(1, 25))
  # The online monitors are logged at the same steps with the same values.
  monitors = [{k: v for k, v in r.items() if k == "step" or k.startswith("monitor_")}
              for r in map(json.loads, open(os.path.join(killed_dir, "metrics.jsonl")))
              if "monitor_knn_top1" in r]
  with open(tmp_path / "straight" / "metrics.jsonl") as f:
    expected = [{k: v for k, v in r.items() if k == "step" or k.startswith("monitor_")}
                for r in map(json.loads, f) if "monitor_knn_top1" in r]
  assert [m["step"] for m in monitors] == [6, 12, 18, 24] and monitors == expected
  a, b = _final_params(tmp_path / "straight", 24), _final_params(killed_dir, 24)
  for x, y in zip(ocp.tree.to_flat_dict(a).values(), ocp.tree.to_flat_dict(b).values()):
    np.testing.assert_array_equal(x, y)


def test_sigterm_saves_and_exits_cleanly(tmp_path):
  proc = _cli(tmp_path, "--config.total_steps=200", "--config.checkpoint_every=1000")
  _wait_for_step(proc, tmp_path, 3)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-2000:]
  steps = sorted(int(d) for d in os.listdir(tmp_path / "checkpoints") if d.isdigit())
  assert steps and 3 <= steps[-1] < 200
  assert f"SIGTERM: saved step {steps[-1]}" in err + out
  assert not os.path.exists(tmp_path / "report.json")
