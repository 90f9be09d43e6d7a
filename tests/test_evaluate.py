"""Evaluation through its entry point: every evaluator, for every method family it applies to."""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from steerjax import augment
from steerjax import config as config_lib
from steerjax import evaluators
from steerjax import train
from steerjax.data.loader import read_pairs
from steerjax.evaluators import report as report_lib
from steerjax.evaluators import steering as steering_eval
from steerjax.evaluators import transfer as transfer_eval
from steerjax.evaluators import tta as tta_eval
from steerjax.metrics import corruptions
from steerjax.metrics import equivariance
from steerjax.metrics import probes

ALL = tuple(evaluators.REGISTRY)


def _tiny_config(method="steerable", **eval_overrides):
  cfg = config_lib.base_config()
  cfg.method = method
  cfg.data.num_objects, cfg.data.views_per_object = 48, 4
  cfg.model.width_multiplier, cfg.batch_size, cfg.total_steps = 0.125, 16, 3
  cfg.head.proj_hidden, cfg.head.proj_dim, cfg.head.proj_layers = 32, 16, 1
  cfg.progress = False
  cfg.eval.update(dict(probe_epochs=5, tta_views=3, tta_examples=24, max_examples=96,
                       r2_hidden=16, r2_steps=20, batch_size=64, equivariance_examples=8,
                       factor_examples=48, **{"evaluators": ALL, **eval_overrides}))
  config_lib.validate(cfg)
  return cfg


def _trained(tmp_path_factory, method):
  workdir = str(tmp_path_factory.mktemp(method))
  cfg = _tiny_config(method)
  run = train.train(cfg, workdir)
  return cfg, workdir, run, evaluators.evaluate_run(run, workdir)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  return _trained(tmp_path_factory, "steerable")


@pytest.fixture(scope="module")
def sie(tmp_path_factory):
  return _trained(tmp_path_factory, "sie")


def _context(run, workdir):
  return evaluators.Context(run, workdir, train.variables_for_eval(run.state),
                            evaluators.random_init_variables(run))


def test_every_evaluator_reports_on_steerable(trained):
  _, workdir, _, report = trained
  for key in ("linear_probe_top1", "knn_top1", "steering_error", "gamma", "tta_steered_top1",
              "tta_image_top1", "corrupt_top1_mean", "ood_auc_steered_mean",
              "ood_auc_agreement_steered_mean", "ood_auc_neg_entropy_image_mean", "rotation_r2_all",
              "equiv_corr_translate_overall", "ood_auc_knn_steered_mean", "tta_speedup",
              "ood_feature_norm_ratio_mean"):
    assert np.isfinite(report[key]), key
  # Every factor the policy varies and every rendered one, for the trained and the random encoder.
  for factor in ("crop", "flip", "brightness", "contrast", "saturation", "hue", "grayscale",
                 "rotation", "floor_hue", "light_hue", "light_direction"):
    for suffix in ("", "_random_init"):
      assert report[f"factor_r2_{factor}{suffix}"] <= 1, factor
  assert "ood_auc_agreement_none_mean" not in report  # one view always agrees with itself
  # ImageNet-C's 15 corruptions, generated (synthetic3d has no prepared corrupted set); no
  # baseline, so mCE is the plain mean error.
  assert report["corrupt_prepared_fraction"] == 0
  assert report["corrupt_mce"] == pytest.approx(np.mean(
      [1 - report[f"corrupt_top1_{c}_s{s}"] for c in corruptions.CORRUPTIONS for s in range(1, 6)]))
  with open(f"{workdir}/report.md") as f:
    markdown = f.read()
  # The only evaluator that does not apply says why; the others have their sections.
  assert "- transfer: eval.transfer_datasets is empty" in markdown
  assert "- sie_retrieval: method steerable is not conditioned" in markdown
  for section in ("## Representation", "## Steering", "## Tta", "## Robustness",
                  "## Learned equivariance"):
    assert section in markdown
  assert markdown.index("**Headline:**") < markdown.index("## Representation")


def test_report_files_agree(trained):
  _, workdir, _, report = trained
  with open(f"{workdir}/report.json") as f:
    assert json.load(f) == pytest.approx(report)
  with open(f"{workdir}/report.md") as f:
    markdown = f.read()
  for key in ("linear_probe_top1", "steering_error", "tta_steered_top1", "rotation_r2_all", "corrupt_mce"):
    assert f"| {key} | {report[key]:.4f} |" in markdown
  # The corruption benchmark is one grid: a row per corruption, severities 1..5, mean, CE.
  row = [report[f"corrupt_top1_fog_s{s}"] for s in range(1, 6)] + [report["corrupt_top1_fog"], report["corrupt_ce_fog"]]
  assert "| fog | " + " | ".join(f"{v:.4f}" for v in row) + " |" in markdown
  assert "| corrupt_top1_fog_s1 |" not in markdown


def test_report_sections_show_headlines_then_their_plots(trained):
  _, workdir, _, report = trained
  with open(f"{workdir}/report.md") as f:
    markdown = f.read()
  for section, png in (("tta", "tta_views.png"), ("robustness", "corruption_severity.png"),
                       ("robustness", "ood_auc_views.png"), ("learned equivariance", "layer_equivariance.png")):
    assert os.path.getsize(os.path.join(workdir, png)) > 0
    title = f"## {section[0].upper()}{section[1:]}"
    body = markdown[markdown.index(title):]
    assert body.index("**") < body.index(f"![{section}]({png})") < body.index("| metric |")
  assert "**tta_none_top1** " + f"{report['tta_none_top1']:.4f}" in markdown
  with open(f"{workdir}/report.json") as f:  # flat: numbers only
    assert all(isinstance(v, (int, float)) for v in json.load(f).values())


def test_restored_run_gives_the_same_report(trained):
  cfg, workdir, run, report = trained
  restored = train.restore(cfg, workdir)
  for a, b in zip(jax.tree.leaves(run.state.params), jax.tree.leaves(restored.state.params)):
    np.testing.assert_array_equal(a, b)
  with cfg.unlocked():
    cfg.eval.evaluators = ("linear_probe", "steering", "tta")
  try:
    again = evaluators.evaluate_run(restored, workdir)
  finally:
    with cfg.unlocked():
      cfg.eval.evaluators = ALL
  timed = {k for k in again if report_lib.is_wall_clock(k)}
  assert {"tta_speedup", "eval_seconds_tta", "train_seconds"} <= timed and all(again[k] > 0 for k in timed)
  assert ({k: v for k, v in again.items() if k not in timed} ==
          pytest.approx({k: report[k] for k in again if k not in timed}, rel=1e-5, abs=1e-6))


def test_steered_tta_basis_path_equals_generic_steerer(trained):
  """The evaluator's fast linear-in-g path gives the same per-view probabilities as ρ(g) z."""
  _, workdir, run, _ = trained
  ctx = _context(run, workdir)
  assert ctx.fns.steer_basis is not None
  images = ctx.subset("val", 8)["image"]
  fast = tta_eval.view_probabilities(ctx, images)
  generic_ctx = _context(run, workdir)
  generic_ctx._cache["fns"] = dataclasses.replace(ctx.fns, steer_basis=None, steer_combine=None)
  generic = tta_eval.view_probabilities(generic_ctx, images)
  assert fast["steered"].shape == (8, 3, run.datasets.num_classes)
  np.testing.assert_allclose(fast["steered"], generic["steered"], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(fast["image"], generic["image"], rtol=1e-5, atol=1e-6)


def test_evaluation_uses_inference_mode_batchnorm(trained):
  """Embeddings of an image do not depend on the rest of its batch (running statistics)."""
  _, workdir, run, _ = trained
  ctx = _context(run, workdir)
  images = ctx.floats(ctx.images("val")["image"][:8])
  embed = ctx.jitted(ctx.fns.embed)
  np.testing.assert_allclose(embed(ctx.variables, images[:1])[0], embed(ctx.variables, images)[0],
                             rtol=1e-5, atol=1e-6)


def test_augment_steering_matches_direct_computation_at_any_chunking(trained):
  """Streamed steering: each example's augmentation from its own key, so a chunk size that
  does not divide the split gives the figures of computing everything at once."""
  cfg, workdir, run, _ = trained
  ctx = _context(run, workdir)
  ctx.run = dataclasses.replace(run, config=cfg.copy_and_resolve_references())
  ctx.run.config.eval.batch_size = 13
  streamed = steering_eval.run(ctx)
  policy, model, v = run.method.policy(), run.model, ctx.variables
  images = ctx.images("val")["image"]
  key = jax.random.PRNGKey(cfg.seed + 7)
  params = jax.vmap(lambda i: policy.sample(jax.random.fold_in(key, i), images.shape[1:3]))(
      np.arange(len(images)))
  views = jax.vmap(lambda im, p: policy.apply(im, p, ctx.image_size))(images / 255.0, params)
  z = model.apply(v, ctx.floats(images), method="steer_embed")
  z_t = model.apply(v, views, method="steer_embed")
  z_p = model.apply(v, z, policy.encode(params), method="steer")
  assert streamed["steering_error"] == pytest.approx(
      float(equivariance.steering_error(z, z_t, z_p)), rel=1e-4)
  assert streamed["steering_cosine"] == pytest.approx(
      float(equivariance.steering_cosine(z_t, z_p)), rel=1e-5)


def test_pixel_probe_reference_is_the_probe_on_downsampled_pixels(trained):
  cfg, workdir, run, report = trained
  ctx = _context(run, workdir)
  size, e = cfg.eval.pixel_probe_size, cfg.eval
  data = {}
  for split in ("train", "val"):
    images = ctx.images(split)
    pixels = np.asarray(augment.resize_batch(images["image"], size)).reshape(len(images["image"]), -1)
    data[split] = pixels, images["label"]
  assert data["val"][0].shape[1] == size * size * 3
  expected = probes.linear_probe(*data["train"], *data["val"], run.datasets.num_classes,
                                 epochs=e.probe_epochs, batch_size=e.probe_batch_size, lr=e.probe_lr,
                                 optimizer=e.probe_optimizer, seed=cfg.seed)
  assert report["linear_probe_top1_pixels"] == pytest.approx(expected["top1"], abs=1e-6)


def test_every_evaluator_on_sie_including_steering(sie):
  _, workdir, _, report = sie
  for key in ("steering_error", "steering_cosine", "sie_mrr", "sie_random_init_mrr", "sie_pre",
              "rotation_r2_inv", "rotation_r2_equi", "ood_auc_none_mean", "knn_top1"):
    assert np.isfinite(report[key]), key
  with open(f"{workdir}/report.md") as f:
    assert "- tta: method sie does not steer the representation" in f.read()


def test_pairs_steering_error_matches_an_independent_computation(sie):
  """Steering for pairs methods: held-out view pairs, g the rendered transformation."""
  _, workdir, run, report = sie
  ctx = _context(run, workdir)
  indices, _ = ctx.view_pairs("val", ctx.config.eval.max_examples)
  pairs = read_pairs(run.datasets.val.take, indices)
  assert len(indices) and np.all(pairs["view_id"] != pairs["view_id2"])
  model, v = run.model, ctx.variables
  z = model.apply(v, ctx.floats(pairs["image"]), method="steer_embed")
  z_t = model.apply(v, ctx.floats(pairs["image2"]), method="steer_embed")
  z_p = model.apply(v, z, pairs["transform"][:, :4].astype(np.float32), method="steer")
  assert report["steering_error"] == pytest.approx(
      float(equivariance.steering_error(z, z_t, z_p)), rel=1e-4)
  assert steering_eval.run(ctx)["steering_error"] == pytest.approx(report["steering_error"], rel=1e-5)


def test_equimod_on_pairs_gets_steering(tmp_path):
  cfg = _tiny_config("equimod_pairs", evaluators=("steering", "sie_retrieval", "tta"))
  run = train.train(cfg, str(tmp_path))
  report = evaluators.evaluate_run(run, str(tmp_path))
  assert np.isfinite(report["steering_error"]) and np.isfinite(report["sie_mrr"])
  assert "tta_steered_top1" not in report


def test_missing_checkpoint_is_a_clear_error(tmp_path):
  with pytest.raises(train.NoCheckpointError, match="no checkpoint in"):
    train.restore(_tiny_config(), str(tmp_path))


def test_transfer_probes_run_on_prepared_sets_and_skip_absent_ones(trained, tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  cfg, workdir, run, _ = trained
  with cfg.unlocked():
    cfg.eval.transfer_datasets = ("dtd",)
    cfg.data.data_dir = str(tmp_path)  # nothing prepared there
  try:
    with pytest.raises(evaluators.NotApplicable, match="none of dtd is prepared"):
      transfer_eval.run(_context(run, workdir))
    with tfds.testing.mock_data(num_examples=24):
      out = transfer_eval.run(_context(run, workdir))
    assert set(out) == {"transfer_dtd_top1"} and 0.0 <= out["transfer_dtd_top1"] <= 1.0
  finally:
    with cfg.unlocked():
      cfg.data.data_dir, cfg.eval.transfer_datasets = "", ()


def test_streamed_features_equal_embedding_the_whole_split(trained):
  """Chunked, padded streaming gives each example its own embedding, in index order, with its
  labels; a chunk size that does not divide the split exercises the padded last chunk."""
  cfg, workdir, run, _ = trained
  ctx = _context(run, workdir)
  ctx.run = dataclasses.replace(run, config=cfg.copy_and_resolve_references())
  ctx.run.config.eval.batch_size = 13
  val = ctx.images("val")
  streamed = ctx.split_arrays("val")
  np.testing.assert_allclose(streamed["features"], ctx.embed(val["image"]), rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(streamed["label"], val["label"])
  assert "image" not in streamed
  subset = ctx.subset("val", 5)
  np.testing.assert_array_equal(subset["image"], val["image"][:5])
