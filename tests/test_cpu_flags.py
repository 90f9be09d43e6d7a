"""steerjax.cpu_flags: set where it is known to parse, never over the user's choice."""

import os
import subprocess
import sys

import jax
import pytest

from steerjax import cpu_flags


@pytest.fixture
def env(monkeypatch):
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  monkeypatch.delenv("STEERJAX_CPU_FLAGS", raising=False)
  monkeypatch.setattr(cpu_flags.importlib.metadata, "version", lambda name: "0.10.2")
  return monkeypatch


def test_appends_to_existing_flags(env):
  env.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
  assert cpu_flags.apply()
  assert os.environ["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=4 {cpu_flags.FLAG}"
  assert cpu_flags.apply()  # idempotent
  assert os.environ["XLA_FLAGS"].count(cpu_flags.FLAG) == 1


@pytest.mark.parametrize("setting", [
    {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=reduce,individual_convolution"},
    {"STEERJAX_CPU_FLAGS": "0"}])
def test_user_choice_wins(env, setting):
  for key, value in setting.items():
    env.setenv(key, value)
  before = os.environ.get("XLA_FLAGS")
  assert not cpu_flags.apply()
  assert os.environ.get("XLA_FLAGS") == before


def test_untested_jaxlib_gets_no_flag(env):
  env.setattr(cpu_flags.importlib.metadata, "version", lambda name: "0.11.0")
  assert not cpu_flags.apply()
  assert "XLA_FLAGS" not in os.environ


def _ynn_fusions(f, *args) -> int:
  return f.lower(*args).compile().as_text().count("\"kind\":\"__ynn_fusion\"")


@pytest.mark.skipif(not jax.__version__.startswith(cpu_flags.TESTED_JAXLIB), reason="flag set only there")
def test_flag_reaches_xla_in_a_fresh_process():
  """Importing steerjax first sends reductions, not convolutions, to YNNPACK."""
  code = ("import steerjax, jax, jax.numpy as jnp; from jax import lax; import tests.test_cpu_flags as t\n"
          "conv = jax.jit(lambda x, w: lax.conv_general_dilated(x, w, (1, 1), 'SAME', "
          "dimension_numbers=('NHWC', 'HWIO', 'NHWC')))\n"
          "print(t._ynn_fusions(jax.jit(lambda x: x.mean(0)), jnp.ones((512, 8))), "
          "t._ynn_fusions(conv, jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 4))))")
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "STEERJAX_CPU_FLAGS")}
  out = subprocess.run([sys.executable, "-c", code], env={**env, "JAX_PLATFORMS": "cpu"},
                       capture_output=True, text=True, check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  reductions, convolutions = map(int, out.stdout.split())
  assert reductions >= 1 and convolutions == 0
