"""The Python API against independent paths: evaluation's features, the steerer module, the
checkpoint's tree, and the CLI's --eval_only report."""

import contextlib
import io
import json
import os
import textwrap

from absl import flags
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

import steerjax
from steerjax import api
from steerjax import augment
from steerjax import checkpoint
from steerjax import config as config_lib
from steerjax import main as main_lib
from steerjax import train
from steerjax.evaluators import base as eval_base
from steerjax.evaluators import report as report_lib
from steerjax.metrics import probes

# The tiny run every test here shares; `get_config` below rebuilds it for the CLI.
TINY = textwrap.dedent("""
    from steerjax import config as config_lib

    def get_config(arg=None):
      c = config_lib.base_config()
      c.method = arg or "steerable"
      c.data.num_objects, c.data.views_per_object = 40, 4
      c.model.width_multiplier, c.batch_size, c.total_steps = 0.125, 16, 2
      c.head.proj_hidden, c.head.proj_dim, c.head.pred_hidden = 32, 16, 32
      c.progress, c.log_every = False, 1
      c.eval.update(dict(evaluators=("linear_probe", "steering"), probe_epochs=3,
                         max_examples=64, batch_size=32))
      return c
""")


def _config(tmp_path_factory, method):
  path = tmp_path_factory.getbasetemp() / "tiny_config.py"
  path.write_text(TINY)
  return str(path), main_lib.load_config(f"{path}:{method}")


@pytest.fixture(scope="module")
def steerable(tmp_path_factory):
  spec, cfg = _config(tmp_path_factory, "steerable")
  workdir = str(tmp_path_factory.mktemp("steerable"))
  trained = api.train(cfg, workdir, evaluate=False)
  return spec, workdir, trained


def test_load_run_restores_the_config_and_the_trained_variables(steerable):
  _, workdir, trained = steerable
  run = api.load_run(workdir)
  assert run.config.to_dict() == trained.config.to_dict()
  assert trained.report is None and run.report is None  # not evaluated yet
  jax.tree.map(np.testing.assert_array_equal, run.variables, trained.variables)
  assert run.steerer is not None and steerjax.load_run is api.load_run


def test_embed_equals_the_features_evaluation_streams(steerable):
  _, workdir, _ = steerable
  run = api.load_run(workdir)
  ctx = run.context()
  streamed = ctx.features("val")  # evaluation's own path: chunked reads, sharded jit
  source = run.trained.datasets.val
  indices = ctx._cap(len(source))  # pylint: disable=protected-access
  images = eval_base.read(source, indices)["image"]
  ours = run.embed(images, batch_size=7)  # a ragged last chunk
  np.testing.assert_allclose(ours, streamed, rtol=1e-5, atol=1e-5)
  # Independently: the encoder module on the resized floats, inference-mode BatchNorm.
  floats = augment.resize_batch(images, run.method.image_size)
  direct = run.encoder.apply(run.encoder_variables, floats, train=False)
  np.testing.assert_allclose(ours, direct, rtol=1e-5, atol=1e-5)


def test_steer_equals_the_steerer_module_and_identity_g_is_identity(steerable):
  _, workdir, _ = steerable
  run = api.load_run(workdir)
  images = run.examples("val", 6)["image"]
  z = run.embed(images)
  params = run.sample(0, 6, images.shape[1:3])
  g = run.encode(params)
  steerer_vars = {"params": run.variables["params"]["steerer"]}
  expected = run.steerer.apply(steerer_vars, z, g)
  np.testing.assert_allclose(run.steer(z, g), expected, rtol=1e-5, atol=1e-5)
  # ρ(0) = I for the linear steerer; g = 0 is its identity element.
  np.testing.assert_allclose(run.steer(z, np.zeros(g.shape[-1])), z, atol=1e-6)
  # Trained generators are not zero: steering moves embeddings.
  assert np.abs(run.steer(z, g) - z).max() > 1e-6


def test_api_evaluate_equals_cli_eval_only(steerable):
  spec, workdir, _ = steerable
  report = api.load_run(workdir).evaluate()
  os.remove(os.path.join(workdir, "report.json"))
  out = io.StringIO()
  try:
    main_lib._parse_flags(["main", "--config", f"{spec}:steerable", "--workdir", workdir,  # pylint: disable=protected-access
                           "--eval_only"])
    with contextlib.redirect_stdout(out):
      main_lib.main([])
  finally:
    flags.FLAGS.unparse_flags()
    main_lib._overrides.clear()  # pylint: disable=protected-access
  with open(os.path.join(workdir, "report.json")) as f:
    cli = json.load(f)
  assert "linear_probe_top1" in cli and "steering_error" in cli
  untimed = lambda r: {k: v for k, v in r.items() if not report_lib.is_wall_clock(k)}
  assert untimed(cli) == pytest.approx(untimed(report), rel=1e-6, abs=1e-6)
  assert "report:" in out.getvalue()


def test_plot_loss_draws_each_logged_term(steerable):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  _, workdir, _ = steerable
  ax = api.plot_loss(workdir)
  columns = api.read_metrics(workdir)
  lines = {line.get_label(): line for line in ax.lines}
  assert set(lines) == {"loss", "task", "steer"}
  np.testing.assert_array_equal(lines["loss"].get_ydata(), columns["loss"])
  assert list(columns["step"]) == [1, 2]


def test_load_encoder_gives_the_online_not_the_ema_encoder(tmp_path_factory):
  """A BYOL checkpoint whose EMA target differs from the online network everywhere (random
  values of the state's shapes, nothing compiled, so the test stays cheap): the API must hand
  back the online encoder."""
  _, cfg = _config(tmp_path_factory, "byol")
  workdir = str(tmp_path_factory.mktemp("byol"))
  main_lib.start(workdir, *main_lib.accept(cfg, "test", [], workdir, jax.device_count())).close()
  rng = np.random.default_rng(0)
  fill = lambda s: (rng.standard_normal(s.shape) if np.issubdtype(s.dtype, np.floating)
                    else np.zeros(s.shape)).astype(s.dtype)
  state = jax.tree.map(fill, train.setup(cfg, abstract_state=True)[6])
  shift = lambda tree: jax.tree.map(lambda x: x + 1.0, tree)
  state = state.replace(target_params=shift(state.params),
                        target_batch_stats=shift(state.batch_stats))
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), 1, 1)
  ckpt.save(1, state, force=True)
  ckpt.close()
  module, variables = api.load_encoder(workdir)
  saved = ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", "1", "default"))
  jax.tree.map(np.testing.assert_array_equal, variables["params"], saved["params"]["encoder"])
  jax.tree.map(np.testing.assert_array_equal, variables["batch_stats"],
               saved["batch_stats"]["encoder"])
  for online, target in zip(jax.tree.leaves(variables["params"]),
                            jax.tree.leaves(saved["target_params"]["encoder"])):
    assert not np.array_equal(online, target)
  x = np.zeros((2, 32, 32, 3), np.float32)
  assert module.apply(variables, x, train=False).shape == (2, module.feature_dim)


def test_train_refuses_a_bad_config_before_writing(tmp_path):
  cfg = config_lib.base_config()
  cfg.batch_size = -1
  with pytest.raises(config_lib.ConfigError, match="batch_size"):
    api.train(cfg, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_tta_curve_equals_steering_and_augmenting_by_hand(steerable):
  _, workdir, _ = steerable
  run = api.load_run(workdir)
  (row,) = run.tta_curve(num_views=(2,), examples=8, repeats=1)
  val = run.examples("val", 8)
  images, labels = val["image"], val["label"]
  policy = run.config.eval.tta_policy.to_dict()
  params = run.sample(run.config.seed + 1000, 16, images.shape[1:3], policy)
  views = run.augment(np.repeat(images, 2, 0), params, policy)  # image i's views at rows 2i, 2i+1
  z = run.embed(images)
  head = run.context().probe()["head"]
  logits = lambda e: np.asarray(probes.probe_logits(head, e))
  mean_softmax = lambda e: np.asarray(jax.nn.softmax(logits(e), -1)).reshape(8, 2, -1).mean(1)
  image_probs = mean_softmax(run.embed_views(views))
  steered_probs = mean_softmax(run.steer(np.repeat(z, 2, 0), run.encode(params)))
  assert row["image_top1"] == np.mean(image_probs.argmax(-1) == labels)
  assert row["steered_top1"] == np.mean(steered_probs.argmax(-1) == labels)
  assert row["image_s"] > 0 and row["steered_s"] > 0


def test_identity_augmentation_is_the_plain_resize_and_toward_ends_at_its_params(steerable):
  _, workdir, _ = steerable
  run = api.load_run(workdir)
  images = run.examples("val", 4)["image"]
  np.testing.assert_allclose(run.augment(images, api.identity_augmentation(4)),
                             augment.resize_batch(images, run.method.image_size), atol=1e-6)
  params = run.sample(3, 4, images.shape[1:3])
  for key in ("box", "factors"):
    np.testing.assert_allclose(api.toward(params, 1.0)[key], params[key], rtol=1e-6)
    np.testing.assert_allclose(api.toward(params, 0.0)[key], api.identity_augmentation(4)[key])
