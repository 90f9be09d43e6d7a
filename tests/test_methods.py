"""Tests for steerjax.methods.

Each loss is checked against an independent NumPy re-implementation of the paper's (or the
official code's) formula on fixed inputs; every method then trains a few steps on synthetic3d
through the shared train step and its loss goes down; BYOL's EMA target moves toward the
online network; and (slow) a short SIE run learns a predictor that beats a random network on
MRR, with an invariant half that is more invariant than its equivariant half.
"""

import functools
import json
import os
import subprocess
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from steerjax import config as config_lib
from steerjax import methods
from steerjax import train
from steerjax.data import rotations
from steerjax.data import synthetic3d
from steerjax.metrics import equivariance

NUM_CLASSES = synthetic3d.NUM_CLASSES
OWN_METHODS = ("supervised", "simclr", "byol", "vicreg", "equimod_simclr", "equimod_byol",
               "equimod_pairs", "vicreg_equimod", "sie", "augself")

# ----------------------------------------------------------------------------- NumPy references


def np_normalize(x):
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def np_nt_xent(a, b, temperature):
  """Row by row: -log softmax of the positive among the 2N - 1 others."""
  z = np_normalize(np.concatenate([a, b]).astype(np.float64))
  n = len(a)
  total = 0.0
  for i in range(2 * n):
    logits = np.array([z[i] @ z[j] / temperature for j in range(2 * n) if j != i])
    others = [j for j in range(2 * n) if j != i]
    positive = others.index((i + n) % (2 * n))
    total += np.log(np.sum(np.exp(logits))) - logits[positive]
  return total / (2 * n)


def np_byol(p, z):
  p, z = np_normalize(p.astype(np.float64)), np_normalize(z.astype(np.float64))
  return np.mean(np.sum((p - z) ** 2, axis=-1))  # = 2 - 2 cos for unit vectors


def np_mse(x, y):
  return np.mean((x.astype(np.float64) - y) ** 2)


def np_std_hinge(x):
  """Official: x - mean, std = sqrt(var(unbiased) + 1e-4), mean(relu(1 - std))."""
  x = x.astype(np.float64)
  x = x - x.mean(0)
  std = np.sqrt(np.sum(x ** 2, 0) / (len(x) - 1) + 1e-4)
  return np.mean(np.maximum(0.0, 1.0 - std))


def np_cov(x):
  x = x.astype(np.float64)
  x = x - x.mean(0)
  c = x.T @ x / (len(x) - 1)
  return (np.sum(c ** 2) - np.sum(np.diag(c) ** 2)) / x.shape[1]


def np_cross_entropy(logits, labels):
  logits = logits.astype(np.float64)
  logz = np.log(np.sum(np.exp(logits - logits.max(1, keepdims=True)), 1)) + logits.max(1)
  return np.mean(logz - logits[np.arange(len(labels)), labels])


# ----------------------------------------------------------------------------- losses


def loss_config(name):
  """Unusual coefficient values, so a swapped or dropped weight cannot go unnoticed."""
  c = config_lib.base_config()
  c.method = name
  c.loss.update(temperature=0.3, equi_temperature=0.15, equi_weight=0.8, sim_coeff=3.0,
                std_coeff=5.0, cov_coeff=0.7, equi_factor=0.3, augself_weight=0.6)
  return c


def method_loss(name, outputs, inputs=None, target=None):
  method = methods.get_method(loss_config(name), NUM_CLASSES)
  as_jnp = lambda d: None if d is None else {k: jnp.asarray(v) for k, v in d.items()}
  loss, terms = method.loss(as_jnp(outputs), as_jnp(inputs or {}), as_jnp(target), jnp.int32(0))
  return float(loss), terms


def randn(*shape, seed):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_sie_loss_is_the_official_formula():
  n, d = 16, 6
  z_inv, z_inv2, z_equi, z_equi2 = (randn(n, d, seed=s) * 0.7 for s in range(4))
  pred = randn(n, d, seed=4) * 0.5  # small spread: the one-sided hinge is active
  loss, terms = method_loss("sie", dict(z_inv=z_inv, z_inv2=z_inv2, z_equi=z_equi,
                                        z_equi2=z_equi2, pred=pred))
  x, y = np.concatenate([z_inv, z_equi], 1), np.concatenate([z_inv2, z_equi2], 1)
  expected = (3.0 * np_mse(z_inv, z_inv2) + 0.3 * 3.0 * np_mse(pred, z_equi2)
              + 5.0 * (np_std_hinge(x) / 2 + np_std_hinge(y) / 2)
              + 5.0 * np_std_hinge(pred) / 2
              + 0.7 * (np_cov(x) + np_cov(y)))
  assert np_std_hinge(pred) > 0.1
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  np.testing.assert_allclose(float(terms["pred_variance"]), np_std_hinge(pred) / 2, rtol=1e-5)


def test_equimod_simclr_loss_is_inv_plus_lambda_equi():
  n, d = 6, 5
  inv1, inv2 = randn(n, d, seed=0), randn(n, d, seed=1)
  y, y_hat = randn(2 * n, d, seed=2), randn(2 * n, d, seed=3)
  loss, terms = method_loss("equimod_simclr", dict(inv1=inv1, inv2=inv2, y=y, y_hat=y_hat))
  expected = np_nt_xent(inv1, inv2, 0.3) + 0.8 * np_nt_xent(y, y_hat, 0.15)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  np.testing.assert_allclose(float(terms["equivariant"]), np_nt_xent(y, y_hat, 0.15), rtol=1e-5)


def test_equimod_byol_loss_is_symmetrised_byol_plus_lambda_equi():
  n, d = 6, 5
  q1, q2, t1, t2 = (randn(n, d, seed=s) for s in range(4))
  y, y_hat = randn(2 * n, d, seed=4), randn(2 * n, d, seed=5)
  loss, _ = method_loss("equimod_byol", dict(inv1=q1, inv2=q2, y=y, y_hat=y_hat),
                        target=dict(z1=t1, z2=t2))
  expected = np_byol(q1, t2) + np_byol(q2, t1) + 0.8 * np_nt_xent(y, y_hat, 0.15)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_equimod_pairs_loss():
  n, d = 6, 5
  z1, z2, y2, y2_hat = (randn(n, d, seed=s) for s in range(4))
  loss, _ = method_loss("equimod_pairs", dict(z1=z1, z2=z2, y2=y2, y2_hat=y2_hat))
  expected = np_nt_xent(z1, z2, 0.3) + 0.8 * np_nt_xent(y2_hat, y2, 0.15)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_vicreg_equimod_loss_is_the_official_formula():
  n, d = 16, 6
  z1, z2, y1, y2 = (randn(n, d, seed=s) * 0.7 for s in range(4))  # spread < 1: hinges active
  y2_hat = randn(n, d, seed=4) * 0.2  # a collapsed prediction is not penalised by a hinge
  loss, terms = method_loss("vicreg_equimod", dict(z1=z1, z2=z2, y1=y1, y2=y2, y2_hat=y2_hat))
  inv = (3.0 * np_mse(z1, z2) + 5.0 * (np_std_hinge(z1) + np_std_hinge(z2)) / 2
         + 0.7 * (np_cov(z1) + np_cov(z2)))
  equi = (3.0 * np_mse(y2_hat, y2) + 5.0 * (np_std_hinge(y1) + np_std_hinge(y2)) / 2
          + 0.7 * (np_cov(y1) + np_cov(y2)))
  assert min(np_std_hinge(a) for a in (z1, z2, y1, y2)) > 0.05
  np.testing.assert_allclose(loss, inv + 0.3 * equi, rtol=1e-5)
  np.testing.assert_allclose(float(terms["equivariant"]), equi, rtol=1e-5)
  # The covariance terms are per part: decorrelating z from y would change the value.
  joint = np_cov(np.concatenate([z1, y1], 1))
  assert abs(joint - np_cov(z1) - np_cov(y1)) > 1e-3


def test_simclr_byol_vicreg_augself_supervised_losses():
  n, d = 8, 5
  a, b, c, e = (randn(n, d, seed=s) for s in range(4))
  np.testing.assert_allclose(method_loss("simclr", dict(z1=a, z2=b))[0], np_nt_xent(a, b, 0.3),
                             rtol=1e-5)
  np.testing.assert_allclose(method_loss("byol", dict(q1=a, q2=b), target=dict(z1=c, z2=e))[0],
                             np_byol(a, e) + np_byol(b, c), rtol=1e-5)
  vicreg = (3.0 * np_mse(a, b) + 5.0 * (np_std_hinge(a) + np_std_hinge(b)) / 2
            + 0.7 * (np_cov(a) + np_cov(b)))
  np.testing.assert_allclose(method_loss("vicreg", dict(z1=a, z2=b))[0], vicreg, rtol=1e-5)
  omega, omega_hat = randn(n, 4, seed=7), randn(n, 4, seed=8)
  augself = np_nt_xent(a, b, 0.3) + 0.6 * np_mse(omega_hat, omega)
  np.testing.assert_allclose(
      method_loss("augself", dict(z1=a, z2=b, omega_hat=omega_hat), dict(omega=omega))[0],
      augself, rtol=1e-5)
  logits, labels = randn(n, NUM_CLASSES, seed=9), np.arange(n) % NUM_CLASSES
  np.testing.assert_allclose(
      method_loss("supervised", dict(logits=logits), dict(label=labels))[0],
      np_cross_entropy(logits, labels), rtol=1e-5)


def test_registry_matches_config_methods():
  assert set(methods.REGISTRY) == set(config_lib.METHODS)
  for name in config_lib.METHODS:
    methods.get_method(loss_config(name), NUM_CLASSES)  # the class resolves and constructs


# ----------------------------------------------------------------------------- training


@functools.lru_cache(maxsize=None)
def dataset():
  return synthetic3d.load(num_objects=24, views_per_object=4, image_size=32, seed=0)


def batch_for(pairs: bool) -> dict[str, np.ndarray]:
  """32 examples: view a of an object and, for pairs, another view b of the same object."""
  data = dataset()
  obj = np.arange(32) % 24
  view_a, view_b = np.arange(32) // 24, np.arange(32) // 24 + 2
  ia, ib = obj * 4 + view_a, obj * 4 + view_b
  batch = {"image": data["image"][ia], "label": data["label"][ia]}
  if pairs:
    batch.update(image2=data["image"][ib], latent=data["latent"][ia], latent2=data["latent"][ib],
                 transform=rotations.relative_transform(data["latent"][ia], data["latent"][ib])
                 .astype(np.float32))
  return batch


def tiny_config(name: str, dtype: str = "float32", **loss):
  c = config_lib.base_config()
  c.method = name
  c.model.dtype = dtype
  c.model.width_multiplier = 0.125
  c.head.update(proj_hidden=64, proj_dim=32, pred_hidden=64, equi_hidden=64, equi_dim=32,
                augself_hidden=64)
  if name in ("sie", "equimod_pairs", "vicreg_equimod"):
    c.steerer.name = "hyper_linear"
  if name in ("sie", "vicreg", "vicreg_equimod"):
    c.head.proj_output = "linear"
  c.batch_size = 32
  c.loss.update(loss)
  return c


def fixed_inputs(method):
  """The same method with one fixed augmentation key, so every step sees identical inputs."""
  cls = type(method)

  class Fixed(cls):
    def make_inputs(self, batch, rng):
      del rng
      return cls.make_inputs(self, batch, jax.random.PRNGKey(7))

  return Fixed(method.config, method.num_classes)


def initial_state(method, model, tx, batch, mesh):
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.PRNGKey(0), method.make_inputs(batch, jax.random.PRNGKey(1)))
  variables = flax.core.unfreeze(variables)
  params, stats = variables["params"], variables.get("batch_stats", {})
  state = train.TrainState(
      step=jnp.zeros((), jnp.int32), params=params, batch_stats=stats,
      opt_state=tx.init(params),
      # Copies: the train step donates the state, and one buffer cannot be donated twice.
      target_params=jax.tree.map(jnp.copy, params) if method.uses_target else None,
      target_batch_stats=jax.tree.map(jnp.copy, stats) if method.uses_target else None,
      rng=jax.random.PRNGKey(0))
  return jax.device_put(state, train.replicated(mesh))


def short_run(name: str, dtype: str = "float32", steps: int = 12) -> dict:
  """Trains `steps` steps on one fixed batch through the shared train step.

  Returns the losses and, for BYOL (EMA base 0.9 so 12 steps move it visibly), the distances
  between the initial target, the final target and the final online parameters.
  """
  config = tiny_config(name, dtype, ema_base=0.9 if name == "byol" else 0.996)
  method = fixed_inputs(methods.get_method(config, NUM_CLASSES))
  model = method.build_model()
  mesh = train.make_mesh()
  tx = optax.adam(1e-3)
  batch = batch_for(method.needs_pairs)
  state = initial_state(method, model, tx, batch, mesh)
  initial = jax.device_get(state)
  step_fn = train.make_train_step(method, model, tx, mesh, total_steps=100)
  global_batch = train.global_batch(batch, mesh)
  losses = []
  for _ in range(steps):
    state, metrics = step_fn(state, global_batch)
    losses.append(float(metrics["loss"]))
  out = {"losses": losses}
  if method.uses_target:
    final = jax.device_get(state)
    flat = lambda tree: np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])
    target0, target, online = (flat(initial.target_params), flat(final.target_params),
                               flat(final.params))
    out.update(target_moved=float(np.linalg.norm(target - target0)),
               target_to_online=float(np.linalg.norm(target - online)),
               target0_to_online=float(np.linalg.norm(target0 - online)),
               online_moved=float(np.linalg.norm(online - target0)))
  return out


BFLOAT16_RUN = "simclr:bfloat16"  # method:dtype, a run of the `short_runs` subprocess


def test_bfloat16_compute_trains_like_float32(short_runs):
  """model.dtype=bfloat16 (float32 params and loss): the same 12 steps, losses within 2 %."""
  f32, bf16 = np.array(short_runs["simclr"]["losses"]), np.array(short_runs[BFLOAT16_RUN]["losses"])
  assert np.all(np.isfinite(bf16)) and bf16[-1] < bf16[0] - 0.5
  np.testing.assert_allclose(bf16, f32, rtol=0.02)
  assert not np.array_equal(bf16, f32)  # the bfloat16 path really ran


@pytest.fixture(scope="module")
def short_runs() -> dict:
  """Every method's short run, in one subprocess compiled at XLA's lowest CPU optimisation
  level: compiling nine ResNets dominates this test, and a 6x faster compile keeps the file
  near a minute without changing any other test's XLA settings."""
  env = dict(os.environ, XLA_FLAGS="--xla_backend_optimization_level=0", JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, __file__, *OWN_METHODS, BFLOAT16_RUN], env=env, capture_output=True,
                        text=True, timeout=900, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", OWN_METHODS)
def test_loss_goes_down(short_runs, name):
  losses = np.array(short_runs[name]["losses"])
  assert np.all(np.isfinite(losses))
  assert losses[-3:].mean() < losses[:3].mean(), losses


def test_byol_target_moves_toward_online(short_runs):
  run = short_runs["byol"]
  assert run["target_moved"] > 0
  assert run["target_to_online"] < run["target0_to_online"]
  # EMA: the target covers only part of the way the online network went.
  assert run["target_moved"] < run["online_moved"]


# ----------------------------------------------------------------------------- SIE learns a split


@pytest.mark.slow
def test_sie_learns_equivariant_predictor_and_invariant_half():
  """SIE with g = rotation + floor/spot hue differences (the paper's rotation+colour variant).

  On held-out objects, after 600 steps (about 4 minutes on 2 CPU cores), the hypernetwork's
  predictions retrieve the right view far better than a random network's, and the invariant half
  keeps less of its variance within objects than the equivariant half. The rotation-only g is
  not used here: a quarter-width ResNet learns pose too slowly for a CPU test (supervised
  absolute-pose regression reaches R² 0.12 in as many steps), while colour is learnt in a few
  hundred, so this run shows the split mechanism, not SIE's 3DIEBench numbers.
  """
  num_objects, views, held_out = 300, 10, 60
  data = synthetic3d.load(num_objects=num_objects, views_per_object=views, image_size=32, seed=0)
  train_objects = num_objects - held_out
  c = tiny_config("sie")
  c.model.width_multiplier = 0.25
  c.head.update(proj_hidden=128, proj_dim=64)
  c.steerer.use_colour = True
  c.batch_size = 64
  method = methods.get_method(c, NUM_CLASSES)
  model = method.build_model()
  mesh = train.make_mesh()
  tx = optax.adam(1e-3)  # SIE's optimiser and learning rate
  rng = np.random.default_rng(0)

  def pairs_batch():
    obj = rng.integers(0, train_objects, c.batch_size)
    a = rng.integers(0, views, c.batch_size)
    b = (a + rng.integers(1, views, c.batch_size)) % views  # two distinct views
    ia, ib = obj * views + a, obj * views + b
    return {"image": data["image"][ia], "image2": data["image"][ib], "label": data["label"][ia],
            "latent": data["latent"][ia], "latent2": data["latent"][ib],
            "transform": rotations.relative_transform(data["latent"][ia], data["latent"][ib])}

  state = initial_state(method, model, tx, pairs_batch(), mesh)
  # A host copy: the train step donates (and so deletes) the state's buffers.
  random_variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
  steps = 600
  step_fn = train.make_train_step(method, model, tx, mesh, total_steps=steps)
  for _ in range(steps):
    state, _ = step_fn(state, train.global_batch(pairs_batch(), mesh))
  trained_variables = {"params": state.params, "batch_stats": state.batch_stats}

  held = slice(train_objects * views, None)
  images = jnp.asarray(data["image"][held], jnp.float32) / 255.0
  latents = data["latent"][held].reshape(held_out, views, 7)
  transforms = rotations.relative_transform(
      np.repeat(latents[:, :1], views, 1), latents)  # view 0 -> view j, [O, V, 6]

  apply = jax.jit(lambda v, *args, name: model.apply(v, *args, method=name),
                  static_argnames="name")

  def retrieval(variables):
    z = apply(variables, images, name="steer_embed").reshape(held_out, views, -1)
    predict = lambda zz, g: apply(variables, zz, g, name="steer")
    return equivariance.sie_retrieval(z, jnp.asarray(transforms), predict)["mrr"]

  def within_object_share(h):
    """Share of a feature block's variance that is within objects (0: fully invariant)."""
    h = np.asarray(h).reshape(held_out, views, -1)
    return np.sum(h.var(axis=1).mean(0)) / np.sum(h.reshape(-1, h.shape[-1]).var(0))

  mrr_trained, mrr_random = retrieval(trained_variables), retrieval(random_variables)
  assert mrr_trained > mrr_random + 0.1, (mrr_trained, mrr_random)
  h_inv, h_equi = np.split(np.asarray(apply(trained_variables, images, name="embed")), 2, axis=-1)
  assert within_object_share(h_inv) < within_object_share(h_equi)


if __name__ == "__main__":
  # The `short_runs` fixture's subprocess: one JSON line {"method[:dtype]": short_run(...)}.
  print(json.dumps({run: short_run(*run.split(":")) for run in sys.argv[1:]}))
