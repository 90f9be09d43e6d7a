"""`python -m steerjax.bench train [--steps N] [--json]`: train-step throughput.

Times the whole jitted step (on-device augmentation, forward, loss, backward, update) after
compilation for the default config (steerable SimCLR, ResNet-18 ×0.25 at 32×32, batch 256) and
for ResNet-50 at 224×224 with a small batch, on whatever devices JAX sees.
"""

import argparse
import json
import time

import jax
import numpy as np

from steerjax import config as config_lib
from steerjax import train


def _setup(name: str):
  cfg = config_lib.base_config()
  cfg.data.num_objects = 200
  if name == "resnet50_224":
    cfg.model.name, cfg.model.width_multiplier, cfg.model.cifar_stem = "resnet50", 1.0, False
    cfg.data.image_size, cfg.augment.size, cfg.batch_size = 64, 224, 16
    cfg.augment.policy = "simclr_imagenet"
    cfg.head.proj_hidden, cfg.head.proj_dim = 2048, 128
  return cfg


def time_steps(cfg, steps: int) -> dict:
  mesh = train.make_mesh()
  _, method, model, loader, tx, _, state, _, _ = train.setup(cfg, mesh)
  step_fn = train.make_train_step(method, model, tx, mesh, cfg.total_steps)
  batches = [train.global_batch(loader.batch(s), mesh) for s in range(2)]
  t0 = time.perf_counter()
  state, metrics = step_fn(state, batches[0])
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - t0
  times = []
  for s in range(steps):
    t0 = time.perf_counter()
    state, metrics = step_fn(state, batches[s % 2])
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t0)
  step_s = float(np.median(times))
  return {"model": f"{cfg.model.name}x{cfg.model.width_multiplier}", "image_size": cfg.augment.size or cfg.data.image_size,
          "batch_size": cfg.batch_size, "step_seconds": step_s,
          "examples_per_s": cfg.batch_size / step_s, "first_step_seconds": compile_s}


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(prog="python -m steerjax.bench train")
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--models", default="default,resnet50_224")
  parser.add_argument("--json", action="store_true")
  args = parser.parse_args(argv)
  rows = [time_steps(_setup(name), args.steps) for name in args.models.split(",")]
  if args.json:
    print(json.dumps({"devices": str(jax.devices()), "results": rows}))
    return
  print(f"devices: {jax.devices()}")
  print(f"{'model':<16}{'image':>6}{'batch':>7}{'step s':>9}{'ex/s':>9}{'1st step s':>12}")
  for r in rows:
    print(f"{r['model']:<16}{r['image_size']:>6}{r['batch_size']:>7}{r['step_seconds']:>9.3f}"
          f"{r['examples_per_s']:>9.1f}{r['first_step_seconds']:>12.1f}")
