"""Online monitors: the logged kNN top-1 and steering error are what evaluating the same fixed
examples with the step's online encoder gives."""

import json
import os

import jax
import numpy as np
import pytest

from steerjax import augment
from steerjax import config as config_lib
from steerjax import train
from steerjax.metrics import equivariance
from steerjax.metrics import probes


def _config(method="steerable"):
  cfg = config_lib.base_config()
  cfg.method = method
  cfg.data.num_objects, cfg.data.views_per_object = 40, 4
  cfg.model.width_multiplier, cfg.batch_size, cfg.total_steps = 0.125, 16, 4
  cfg.head.proj_hidden, cfg.head.proj_dim = 32, 16
  cfg.progress, cfg.log_every = False, 100
  cfg.eval.update(dict(evaluators=(), every_steps=2, monitor_examples=20, monitor_bank=50))
  config_lib.validate(cfg)
  return cfg


def _monitored(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if "monitor_knn_top1" in r]


def _fixed(source, n, seed):
  rows = np.sort(np.random.default_rng(seed).choice(len(source), min(n, len(source)), replace=False))
  return source.take(rows)


def test_monitors_equal_an_independent_evaluation_of_the_last_step(tmp_path):
  cfg = _config()
  run = train.train(cfg, str(tmp_path))
  logged = _monitored(str(tmp_path))
  assert [r["step"] for r in logged] == [2, 4]  # every_steps, and not the other steps
  v, model, size = train.variables_for_eval(run.state), run.model, run.method.image_size
  bank = _fixed(run.datasets.train, 50, cfg.seed + 11)
  query = _fixed(run.datasets.val, 20, cfg.seed + 12)
  embed = lambda images: model.apply(v, augment.resize_batch(images, size), method="embed")
  knn = probes.knn_accuracy(embed(bank["image"]), bank["label"], embed(query["image"]),
                            query["label"], run.datasets.num_classes)
  assert logged[-1]["monitor_knn_top1"] == pytest.approx(knn["top1"], abs=1e-6)

  policy, images = run.method.policy(), query["image"] / 255.0
  key = jax.random.PRNGKey(cfg.seed + 11)
  params = jax.vmap(lambda i: policy.sample(jax.random.fold_in(key, i), images.shape[1:3]))(
      np.arange(len(images)))
  views = jax.vmap(lambda im, p: policy.apply(im, p, size))(images, params)
  z = model.apply(v, augment.resize_batch(query["image"], size), method="steer_embed")
  z_t = model.apply(v, views, method="steer_embed")
  z_p = model.apply(v, z, policy.encode(params), method="steer")
  assert logged[-1]["monitor_steering_error"] == pytest.approx(
      equivariance.steering_error(z, z_t, z_p), rel=1e-4)


def test_monitors_off_and_without_a_steerer(tmp_path):
  cfg = _config("simclr")
  train.train(cfg, str(tmp_path / "simclr"))
  logged = _monitored(str(tmp_path / "simclr"))
  assert logged and all("monitor_steering_error" not in r for r in logged)
  with cfg.unlocked():
    cfg.eval.every_steps = 0
  train.train(cfg, str(tmp_path / "off"))
  assert not _monitored(str(tmp_path / "off"))
