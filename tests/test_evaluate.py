"""End-of-training evaluation: reports, restore-and-evaluate, and the evaluators' wiring."""

import json

import jax
import numpy as np
import pytest

from steerjax import config as config_lib
from steerjax import evaluate
from steerjax import train


def _tiny_config(**eval_overrides):
  cfg = config_lib.base_config()
  cfg.data.num_objects, cfg.data.views_per_object = 48, 4
  cfg.model.width_multiplier, cfg.batch_size, cfg.total_steps = 0.125, 16, 3
  cfg.head.proj_hidden, cfg.head.proj_dim = 32, 16
  cfg.progress = False
  cfg.eval.update(dict(probe_epochs=5, tta_views=3, tta_examples=24, max_examples=96,
                       r2_hidden=16, r2_steps=20, **eval_overrides))
  return cfg


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("run"))
  cfg = _tiny_config(evaluators=("linear_probe", "steering", "tta", "rotation_r2"))
  run = train.train(cfg, workdir)
  return cfg, workdir, run, evaluate.evaluate_run(run, workdir)


def test_report_files_agree(trained):
  _, workdir, _, report = trained
  with open(f"{workdir}/report.json") as f:
    assert json.load(f) == pytest.approx(report)
  with open(f"{workdir}/report.md") as f:
    markdown = f.read()
  for key in ("linear_probe_top1", "steering_error", "tta_steered_top1", "rotation_r2_all"):
    assert f"| {key} | {report[key]:.4f} |" in markdown


def test_restored_run_gives_the_same_report(trained):
  cfg, workdir, run, report = trained
  restored = train.restore(cfg, workdir)
  for a, b in zip(jax.tree.leaves(run.state.params), jax.tree.leaves(restored.state.params)):
    np.testing.assert_array_equal(a, b)
  again = evaluate.evaluate_run(restored, workdir)
  assert again == pytest.approx(report, rel=1e-5, abs=1e-6)


def test_evaluation_uses_inference_mode_batchnorm(trained):
  """Embeddings of an image do not depend on the rest of its batch (running statistics)."""
  _, workdir, run, _ = trained
  ctx = evaluate.Context(run, workdir, train.variables_for_eval(run.state), None)
  images = ctx.floats(ctx.images("val")["image"][:8])
  alone = ctx.apply_fn("embed")(ctx.variables, images[:1])
  mixed = ctx.apply_fn("embed")(ctx.variables, images)
  np.testing.assert_allclose(alone[0], mixed[0], rtol=1e-5, atol=1e-6)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
  with pytest.raises(train.NoCheckpointError, match="no checkpoint in"):
    train.restore(_tiny_config(), str(tmp_path))


def test_transfer_probes_run_on_prepared_sets_and_skip_absent_ones(trained, tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  cfg, workdir, run, _ = trained
  ctx = evaluate.Context(run, workdir, train.variables_for_eval(run.state), None)
  with cfg.unlocked():
    cfg.eval.transfer_datasets = ("dtd",)
    cfg.data.data_dir = str(tmp_path)  # nothing prepared there
  try:
    assert evaluate.transfer(ctx) is None
    with tfds.testing.mock_data(num_examples=24):
      fresh = evaluate.Context(run, workdir, ctx.variables, None)
      out = evaluate.transfer(fresh)
    assert set(out) == {"transfer_dtd_top1"} and 0.0 <= out["transfer_dtd_top1"] <= 1.0
  finally:
    with cfg.unlocked():
      cfg.data.data_dir = ""
