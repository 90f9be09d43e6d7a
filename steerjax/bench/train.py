"""`python -m steerjax.bench train [--steps N] [--json] [--vs-torch]`: train-step throughput.

Times the whole jitted step (on-device augmentation, forward, loss, backward, update) after
compilation for the default config (steerable SimCLR, ResNet-18 ×0.25 at 32×32, batch 256) and
for ResNet-50 at 224×224 with a small batch, on whatever devices JAX sees.

`--vs-torch` instead times a supervised step (cross-entropy, SGD momentum 0.9) on steerjax's
ResNet-18 with the CIFAR stem and on the same architecture in PyTorch (channels_last, all
cores), at width ×0.25 / batch 256 and ×1 / batch 64, alternating the two step by step so a
shared CPU slows both alike; it prints the medians after warm-up and their ratio. PyTorch is
the optional `bench` extra. The XLA flags in effect are printed (`steerjax.cpu_flags`;
STEERJAX_CPU_FLAGS=0 runs without them, for the side-by-side figure).
"""

import argparse
import functools
import json
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from steerjax import config as config_lib
from steerjax import train
from steerjax.bench import _timing
from steerjax.models import resnet

VS_TORCH_CASES = ((0.25, 256), (1.0, 64))


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


class _Classifier(nn.Module):
  """steerjax's encoder followed by a linear classifier: the model of the PyTorch mirror."""
  encoder: nn.Module
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train: bool):
    return nn.Dense(self.num_classes)(self.encoder(x, train))


def _jax_step(width_multiplier: float, batch: int, size: int, **encoder_kwargs):
  """Supervised CE + SGD-momentum step on steerjax's ResNet-18 (CIFAR stem); -> (run(), params)."""
  model = _Classifier(resnet.get_encoder("resnet18", width_multiplier, cifar_stem=True, **encoder_kwargs))
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.uniform(size=(batch, size, size, 3)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 10, batch))
  variables = model.init(jax.random.key(0), images[:2], train=False)
  tx = optax.sgd(0.1, momentum=0.9)

  @functools.partial(jax.jit, donate_argnums=0)
  def step(state, images, labels):
    params, batch_stats, opt_state = state

    def loss_fn(params):
      logits, new = model.apply({"params": params, "batch_stats": batch_stats}, images, train=True,
                                mutable=["batch_stats"])
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), new["batch_stats"]

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), batch_stats, opt_state), loss

  state = [(variables["params"], variables["batch_stats"], tx.init(variables["params"]))]

  def run():
    state[0], loss = step(state[0], images, labels)
    return float(loss)

  return run


def _torch_step(width_multiplier: float, batch: int, size: int):
  import torch  # pylint: disable=g-import-not-at-top
  from steerjax.bench import _torch_resnet  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  width = resnet.get_encoder("resnet18", width_multiplier).width
  model = _torch_resnet.classifier("resnet18", width, True, 10).to(memory_format=torch.channels_last).train()
  images = torch.rand(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
  labels = torch.randint(0, 10, (batch,))
  step = _torch_resnet.make_step(model)
  return lambda: step(images, labels)


def vs_torch(cases, steps: int, warmup: int, encoder_kwargs=None, threads: int = 0) -> list[dict]:
  """Times steerjax's and PyTorch's steps in alternating rounds (fair under a shared CPU).

  Both wall-clock and CPU time (this process, all threads) are kept: with `threads=1` (one
  intra-op thread each, e.g. under `taskset -c 1`) CPU time is what other jobs on the machine
  cannot inflate; with several threads PyTorch's spinning OpenMP workers inflate its own.
  """
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(threads or os.cpu_count())
  rows = []
  for width_multiplier, batch in cases:
    contenders = {"steerjax": _jax_step(width_multiplier, batch, 32, **(encoder_kwargs or {})),
                  "pytorch": _torch_step(width_multiplier, batch, 32)}
    medians = _timing.alternating_medians(contenders, steps, warmup)
    wall_rate = {name: batch / wall for name, (wall, _) in medians.items()}
    cpu_rate = {name: batch / cpu for name, (_, cpu) in medians.items()}
    rows.append({"width_multiplier": width_multiplier, "batch_size": batch,
                 "steerjax_img_s": wall_rate["steerjax"], "pytorch_img_s": wall_rate["pytorch"],
                 "ratio": wall_rate["steerjax"] / wall_rate["pytorch"],
                 "steerjax_img_cpu_s": cpu_rate["steerjax"], "pytorch_img_cpu_s": cpu_rate["pytorch"],
                 "cpu_ratio": cpu_rate["steerjax"] / cpu_rate["pytorch"]})
  return rows


def main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser(prog="python -m steerjax.bench train")
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--models", default="default,resnet50_224")
  parser.add_argument("--json", action="store_true")
  parser.add_argument("--vs-torch", action="store_true", help="supervised ResNet-18 step vs PyTorch's")
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--threads", type=int, default=0,
                      help="intra-op threads for both (--vs-torch; default: all cores); 1 for per-core figures")
  args = parser.parse_args(argv)
  if args.threads == 1:  # read when JAX starts its CPU backend, which has not happened yet
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_cpu_multi_thread_eigen=false".strip()
  if args.vs_torch:
    try:
      import torch  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
      raise SystemExit("error: --vs-torch needs PyTorch: pip install -e '.[bench]'") from None
    rows = vs_torch(VS_TORCH_CASES, args.steps, args.warmup, threads=args.threads)
    if args.json:
      print(json.dumps({"devices": str(jax.devices()), "xla_flags": os.environ.get("XLA_FLAGS", ""),
                        "results": rows}))
      return
    print(f"devices: {jax.devices()}, {os.cpu_count()} CPU cores; median of {args.steps} steps after "
          f"{args.warmup} warm-up, alternating; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    print(f"{'ResNet-18 CIFAR stem':<22}{'batch':>6}{'steerjax img/s':>16}{'pytorch img/s':>15}{'ratio':>8}"
          f"{'steerjax img/CPU-s':>20}{'pytorch img/CPU-s':>19}{'ratio':>8}")
    for r in rows:
      print(f"{'width x' + str(r['width_multiplier']):<22}{r['batch_size']:>6}{r['steerjax_img_s']:>16.1f}"
            f"{r['pytorch_img_s']:>15.1f}{r['ratio']:>7.2f}x{r['steerjax_img_cpu_s']:>20.1f}"
            f"{r['pytorch_img_cpu_s']:>19.1f}{r['cpu_ratio']:>7.2f}x")
    return
  rows = [time_steps(_setup(name), args.steps) for name in args.models.split(",")]
  if args.json:
    print(json.dumps({"devices": str(jax.devices()), "results": rows}))
    return
  print(f"devices: {jax.devices()}")
  print(f"{'model':<16}{'image':>6}{'batch':>7}{'step s':>9}{'ex/s':>9}{'1st step s':>12}")
  for r in rows:
    print(f"{r['model']:<16}{r['image_size']:>6}{r['batch_size']:>7}{r['step_seconds']:>9.3f}"
          f"{r['examples_per_s']:>9.1f}{r['first_step_seconds']:>12.1f}")
