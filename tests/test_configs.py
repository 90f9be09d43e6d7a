"""Every experiment config loads, validates, documents its command, and has a CPU smoke variant.

A config that drifts from the schema (a renamed key, a value outside its choices) fails here
instead of at the start of someone's accelerator run.
"""

import glob
import os

import pytest

from steerjax import config as config_lib
from steerjax import main as main_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "configs", "*.py")))


def load(name, arg=""):
  return main_lib.load_config(os.path.join(ROOT, "configs", f"{name}.py") + (f":{arg}" if arg else ""))


def test_there_are_configs():
  assert "default" in CONFIGS and "sie_3diebench" in CONFIGS and len(CONFIGS) >= 15


@pytest.mark.parametrize("name", CONFIGS)
def test_config_and_its_smoke_variant_validate(name):
  paper, smoke = load(name), load(name, "smoke")
  config_lib.validate(paper)
  config_lib.validate(smoke)
  # The smoke variant shrinks sizes; it never changes what is trained.
  for key in ("method", "task", "steerer.name", "steerer.use_colour", "loss", "augment",
              "optim.name", "optim.schedule", "head.proj_output", "data.pairs"):
    a, b = paper, smoke
    for part in key.split("."):
      a, b = a[part], b[part]
    assert a == b, key
  assert smoke.data.name == "synthetic3d"
  assert smoke.total_steps <= paper.total_steps


@pytest.mark.parametrize("name", CONFIGS)
def test_docstring_gives_the_run_command(name):
  with open(os.path.join(ROOT, "configs", f"{name}.py")) as f:
    source = f.read()
  assert f"python -m steerjax.main --config configs/{name}.py" in source


@pytest.mark.parametrize("name", CONFIGS)
def test_unknown_argument_is_a_config_error(name):
  with pytest.raises(config_lib.ConfigError, match="smoke"):
    load(name, "smok")
