"""The Colab notebooks: stored without outputs, using only names the API has, and executing
headless (smoke parameters injected after the cell tagged `parameters`, papermill's convention).

The kernels compile at XLA's lowest CPU optimisation level: at smoke size compiling dominates
(3x faster: 20-60 s per notebook on 2 cores), and what is checked is that every cell runs and
draws, not how fast XLA's code is. They share the session's compilation cache (conftest)."""

import ast
import os

import pytest

from steerjax import api

nbformat = pytest.importorskip("nbformat")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(ROOT, "launch", "colab")
NAMES = sorted(n for n in os.listdir(NOTEBOOKS) if n.endswith(".ipynb"))


def read(name):
  return nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)


def code_cells(nb):
  return [c for c in nb.cells if c.cell_type == "code"]


@pytest.mark.parametrize("name", NAMES)
def test_stored_without_outputs_with_a_parameters_cell(name):
  nb = read(name)
  for cell in code_cells(nb):
    assert cell.outputs == [] and cell.execution_count is None, f"{name}: strip the outputs"
  tagged = [c for c in code_cells(nb) if "parameters" in c.metadata.get("tags", ())]
  assert len(tagged) == 1 and "SMOKE = False" in tagged[0].source


@pytest.mark.parametrize("name", NAMES)
def test_uses_only_names_the_api_has(name):
  """`api.X` and `run.X` in the notebook exist (so an API rename breaks CI, not Colab users)."""
  used = 0
  for cell in code_cells(read(name)):
    for node in ast.walk(ast.parse(cell.source)):
      if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        owner = {"api": api, "run": api.Run}.get(node.value.id)
        if owner is not None:
          used += 1
          assert hasattr(owner, node.attr), f"{name}: {node.value.id}.{node.attr} does not exist"
  assert used >= 5


def execute(name: str, **parameters):
  nbclient = pytest.importorskip("nbclient")
  nb = read(name)
  index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", ()))
  injected = "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
  nb.cells.insert(index + 1, nbformat.v4.new_code_cell(injected, metadata={"tags": ["injected-parameters"]}))
  flags = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
  nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": NOTEBOOKS}}).execute(
                              env=dict(os.environ, XLA_FLAGS=flags))
  return nb


def outputs(nb, kind):
  return [o for c in code_cells(nb) for o in c.outputs
          if o.output_type == kind or kind in o.get("data", {})]


def test_quickstart_runs_in_smoke_mode(tmp_path):
  nb = execute("quickstart.ipynb", SMOKE=True, WORKDIR=str(tmp_path / "run"))
  assert (tmp_path / "run" / "report.json").exists()
  assert len(outputs(nb, "image/png")) == 5  # contact sheet, loss, equivariance, TTA, PCA paths
  text = "".join(o.get("text", "") for o in outputs(nb, "stream"))
  assert "linear_probe_top1" in text and "speed-up" in text


def test_steerers_explained_runs_in_smoke_mode(tmp_path):
  nb = execute("steerers_explained.ipynb", SMOKE=True, WORKDIR=str(tmp_path / "run"))
  assert len(outputs(nb, "image/png")) == 4  # generator norms, spectra/commutators, sweeps, errors
  text = "".join(o.get("text", "") for o in outputs(nb, "stream"))
  assert "crop side" in text and "steering error" in text


def test_measure_your_model_runs_in_smoke_mode(tmp_path):
  nb = execute("measure_your_model.ipynb", SMOKE=True, WORKDIR=str(tmp_path / "run"))
  assert (tmp_path / "run" / "fitted_steerer" / "steerer.json").exists()
  assert len(outputs(nb, "image/png")) == 2  # contact sheet, per-layer equivariance
  text = "".join(o.get("text", "") for o in outputs(nb, "stream"))
  assert "held-out steering_error" in text and "tta_steered_top1" in text
