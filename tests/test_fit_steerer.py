"""The post-hoc steerer: exact recovery on an exactly steerable encoder, the closed form against
NumPy's lstsq and its own ridge formula, streaming, the gradient families, and the CLI on a tiny
run whose steered TTA and steering evaluator then use the fitted steerer."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from steerjax import api
from steerjax import augment
from steerjax import convert
from steerjax import fit_steerer
from steerjax import steerers
from steerjax.augment import policies

# Contrast only (c ~ U(0.6, 1.4), jitter always on, order random), no crop or flip: on images in
# [0.3, 0.6] nothing clips, so the view is c·x + (1 − c)·m(x) exactly, m the grey mean.
CONTRAST = augment.get_policy(dict(base="none", jitter=(0.0, 0.4, 0.0, 0.0), jitter_p=1.0))
CONTRAST_INDEX = policies.ENCODING.index("contrast")
SIZE = 8


def _grey_mean(x):
  return jnp.mean(0.2989 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2], axis=(1, 2))


def _linear_encoder(w, x):
  """f(x) = [m(x), W vec(x)]: linear, with the contrast blend's grey mean as coordinate 0."""
  return jnp.concatenate([_grey_mean(x)[:, None], x.reshape(x.shape[0], -1) @ w], -1)


def _images(n, seed):
  rng = np.random.default_rng(seed)
  return (255 * rng.uniform(0.3, 0.6, (n, SIZE, SIZE, 3))).astype(np.uint8)


def _known_generators(w):
  """f(c·x + (1−c) m 1) − f(x) = (c − 1)(I − f(1) e0ᵀ) f(x), and c − 1 = σ_c g_c."""
  f_one = np.asarray(_linear_encoder(w, jnp.ones((1, SIZE, SIZE, 3))))[0]
  d = f_one.shape[0]
  sigma = CONTRAST.encoding_stats()[1][CONTRAST_INDEX]
  generators = np.zeros((len(policies.ENCODING), d, d), np.float32)
  generators[CONTRAST_INDEX] = sigma * (np.eye(d) - np.outer(f_one, np.eye(d)[0]))
  return generators


@pytest.fixture(scope="module")
def toy():
  w = jnp.asarray(np.random.default_rng(0).normal(size=(SIZE * SIZE * 3, 3)) / 10, jnp.float32)
  return w, [_images(64, s) for s in range(4)]


def test_closed_form_recovers_known_generators(toy):
  w, batches = toy
  fitted = fit_steerer.fit(_linear_encoder, w, batches, CONTRAST, SIZE, ridge=0.0)
  assert isinstance(fitted.module, steerers.LinearSteerer)
  np.testing.assert_allclose(fitted.variables["params"]["generators"], _known_generators(w), atol=2e-4)
  # Held out (other images, other augmentations): steered exactly, so the error is ~0.
  out = fit_steerer.heldout(_linear_encoder, w, fitted, [_images(64, 9)], SIZE)
  assert out["steering_error"] < 1e-6 and out["steering_cosine"] > 1 - 1e-6


def test_fitted_variables_drop_into_the_trained_steerer_and_its_tta_path(toy):
  w, batches = toy
  fitted = fit_steerer.fit(_linear_encoder, w, batches[:1], CONTRAST, SIZE, ridge=1e-3)
  z = jnp.asarray(np.random.default_rng(1).normal(size=(5, 4)), jnp.float32)
  g = jnp.asarray(np.random.default_rng(2).normal(size=(5, 18)), jnp.float32)
  trained = steerers.get_steerer("linear", 4, 18)
  expected = z + jnp.einsum("bk,kij,bj->bi", g, fitted.variables["params"]["generators"], z)
  np.testing.assert_allclose(trained.apply(fitted.variables, z, g), expected, atol=1e-5)
  basis = trained.apply(fitted.variables, z, method="basis_apply")
  np.testing.assert_allclose(trained.apply(fitted.variables, z, basis, g, method="combine"),
                             expected, atol=1e-5)


def _random_problem(n, d, k, seed):
  rng = np.random.default_rng(seed)
  z, g = rng.normal(size=(n, d)), rng.normal(size=(n, k))
  return z.astype(np.float32), rng.normal(size=(n, d)).astype(np.float32), g.astype(np.float32)


def _as_generators(sol, k, d):
  return sol.reshape(k, d, d).transpose(0, 2, 1)


def test_ridge_zero_is_lstsq_and_ridge_is_its_formula():
  z, z_t, g = _random_problem(400, 3, 5, 0)
  u = (g[:, :, None] * z[:, None, :]).reshape(len(z), -1).astype(np.float64)
  r = (z_t - z).astype(np.float64)
  normal = fit_steerer.NormalEquations("linear")
  normal.add(z, z_t, g)
  lstsq = _as_generators(np.linalg.lstsq(u, r, rcond=None)[0], 5, 3)
  np.testing.assert_allclose(normal.solve(0.0)["params"]["generators"], lstsq, atol=1e-5)
  np.testing.assert_allclose(normal.solve(1e-9)["params"]["generators"], lstsq, atol=1e-5)
  lam = 0.5 * np.trace(u.T @ u) / u.shape[1]
  ridge = np.linalg.solve(u.T @ u + lam * np.eye(u.shape[1]), u.T @ r)
  np.testing.assert_allclose(normal.solve(0.5)["params"]["generators"], _as_generators(ridge, 5, 3),
                             atol=1e-5)


def test_streaming_in_chunks_equals_one_batch():
  z, z_t, g = _random_problem(301, 4, 6, 1)
  whole, chunks = fit_steerer.NormalEquations("linear"), fit_steerer.NormalEquations("linear")
  whole.add(z, z_t, g)
  for i in range(0, len(z), 37):
    chunks.add(z[i:i + 37], z_t[i:i + 37], g[i:i + 37])
  assert chunks.count == whole.count == 301
  np.testing.assert_allclose(chunks.gram, whole.gram, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(chunks.solve(1e-6)["params"]["generators"],
                             whole.solve(1e-6)["params"]["generators"], atol=1e-5)


def test_hyper_linear_closed_form_recovers_sie_kernel():
  rng = np.random.default_rng(3)
  d, k = 3, 4
  kernel = rng.normal(size=(k, d * d)).astype(np.float32)
  z, g = rng.normal(size=(200, d)).astype(np.float32), rng.normal(size=(200, k)).astype(np.float32)
  module = steerers.get_steerer("hyper_linear", d, k)
  z_t = module.apply({"params": {"kernel": kernel}}, z, g)
  normal = fit_steerer.NormalEquations("hyper_linear")
  normal.add(z, z_t, g)
  np.testing.assert_allclose(normal.solve(0.0)["params"]["kernel"], kernel, atol=1e-4)


@pytest.mark.parametrize("family", ["expm", "hyper_mlp"])
def test_gradient_families_fit_the_toy(toy, family):
  w, batches = toy
  fitted = fit_steerer.fit(_linear_encoder, w, batches, CONTRAST, SIZE, family=family, steps=1000,
                           learning_rate=1e-2, batch_size=64)
  assert isinstance(fitted.module, steerers.STEERERS[family])
  # Relative to predicting no change: the steerer explains most of it (the closed form: all).
  assert fit_steerer.heldout(_linear_encoder, w, fitted, [_images(64, 9)], SIZE)["steering_error"] < 0.3


def test_equimod_family_is_refused(toy):
  with pytest.raises(ValueError, match="affine-free BatchNorm"):
    fit_steerer.fit(_linear_encoder, toy[0], toy[1], CONTRAST, SIZE, family="equimod")


# The command line ---------------------------------------------------------------------------

DATA = ["--config.data.num_objects=40", "--config.data.views_per_object=4", "--config.batch_size=16",
        "--config.head.proj_hidden=32", "--config.head.proj_dim=16", "--config.fit.examples=64",
        "--config.fit.batch_size=32", "--config.fit.ridge=0.1", "--config.eval.max_examples=64", "--config.eval.batch_size=32"]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  """A converted (here: randomly initialised) eighth-width CIFAR-stem ResNet-18."""
  from steerjax.models import resnet  # pylint: disable=g-import-not-at-top
  module = resnet.get_encoder("resnet18", 0.125, True)
  variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False)
  out = str(tmp_path_factory.mktemp("converted"))
  convert.save_converted(out, "resnet18_cifar", 0.125, jax.device_get(variables))
  return out


def test_cli_on_a_converted_encoder_saves_a_steerer_the_api_steers_with(converted, tmp_path, capsys):
  workdir = str(tmp_path / "fit")
  fit_steerer.main(["--workdir", workdir, "--converted", converted, *DATA])
  assert "held-out steering_error" in capsys.readouterr().out
  out_dir = os.path.join(workdir, "fitted_steerer")
  with open(os.path.join(out_dir, "steerer.json")) as f:
    record = json.load(f)
  assert record["family"] == "linear" and record["g_dim"] == 18 and record["converted"] == converted
  assert record["fit"]["ridge"] == 0.1 and np.isfinite(record["heldout"]["steering_error"])

  run = api.load_run(workdir, fitted_steerer=True)
  fitted, _ = fit_steerer.load(out_dir)
  images = run.examples("val", 4)["image"]
  module, variables = convert.load_converted(converted)
  z = run.embed(images)
  np.testing.assert_allclose(  # the run embeds with the converted encoder ...
      z, module.apply(variables, augment.resize_batch(images, 32), train=False), rtol=1e-5, atol=1e-5)
  g = np.random.default_rng(0).normal(size=(4, 18)).astype(np.float32)
  a = fitted.variables["params"]["generators"]
  np.testing.assert_allclose(run.steer(z, g), z + np.einsum("bk,kij,bj->bi", g, a, z),
                             rtol=1e-4, atol=1e-4)  # ... and steers with the fitted steerer
  # The steering evaluator on the reloaded run gives the recorded held-out figure.
  assert run.evaluate(["steering"])["steering_error"] == pytest.approx(
      record["heldout"]["steering_error"], rel=1e-5)


@pytest.mark.slow
def test_cli_on_a_run_without_steerer_gives_steered_tta(tmp_path_factory, capsys):
  from test_api import _config  # pylint: disable=g-import-not-at-top
  _, cfg = _config(tmp_path_factory, "simclr")
  cfg.total_steps = 1
  workdir = str(tmp_path_factory.mktemp("simclr"))
  api.train(cfg, workdir, evaluate=False)
  fit_steerer.main(["--workdir", workdir, "--evaluate", "--config.fit.examples=64",
                    "--config.fit.batch_size=32", "--config.eval.evaluators=('steering', 'tta')",
                    "--config.eval.tta_examples=16", "--config.eval.tta_views=2"])
  assert "report:" in capsys.readouterr().out
  out_dir = os.path.join(workdir, "fitted_steerer")
  with open(os.path.join(out_dir, "steerer.json")) as f:
    record = json.load(f)
  with open(os.path.join(out_dir, "report.json")) as f:
    report = json.load(f)
  assert "tta_steered_top1" in report
  assert report["steering_error"] == pytest.approx(record["heldout"]["steering_error"], rel=1e-6)
  assert not os.path.exists(os.path.join(workdir, "report.json"))  # the run's own is untouched


@pytest.mark.parametrize("args, says", [
    (["--workdir", "/nonexistent/run"], "no such folder"),
    (["--workdir", "{run}", "--config.steerer.name=nope"], "config.steerer.name"),
    (["--workdir", "{run}", "--config.steerer.name=equimod"], "cannot be fitted post hoc"),
    (["--workdir", "{run}"], "no checkpoint"),
    (["--workdir", "{run}", "--converted", "/nonexistent/converted"], "encoder.json"),
])
def test_bad_input_is_one_error_line(tmp_path, capsys, args, says):
  from steerjax import config as config_lib  # pylint: disable=g-import-not-at-top
  run = tmp_path / "run"  # a workdir with a config but no checkpoint
  run.mkdir()
  (run / "config.json").write_text(json.dumps(config_lib.base_config().to_dict()))
  with pytest.raises(SystemExit) as e:
    fit_steerer.main([a.format(run=str(run)) for a in args] + DATA)
  err = capsys.readouterr().err.strip().splitlines()
  assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and says in err[0], err
