"""Evaluate a trained run: `python -m steerjax.evaluate --config configs/NAME.py --workdir DIR`.

Also called at the end of `steerjax.main`. It always evaluates the *online* encoder with
BatchNorm in inference mode (never the EMA target, never batch statistics), embeds each split
once and hands the cached features to every evaluator named in `config.eval.evaluators`.
Results go to `report.json` (flat keys, numbers), `report.md` and PNG plots in the workdir.
"""

import dataclasses
import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from steerjax import augment
from steerjax import train as train_lib
from steerjax.metrics import equivariance
from steerjax.metrics import probes


@dataclasses.dataclass
class Context:
  """A trained model plus cached features, shared by all evaluators."""
  run: train_lib.Run
  variables: Any
  random_variables: Any
  _cache: dict = dataclasses.field(default_factory=dict)

  @property
  def config(self):
    return self.run.config

  @property
  def image_size(self) -> int:
    return self.run.method.image_size

  def apply_fn(self, name: str) -> Callable:
    """A jitted `model.<name>(*args)` with the model in inference mode."""
    if name not in self._cache:
      model = self.run.model
      self._cache[name] = jax.jit(lambda v, *args: model.apply(v, *args, method=name))
    return self._cache[name]

  def batched(self, name: str, variables, *arrays) -> np.ndarray:
    """`apply_fn(name)` over the leading axis in fixed-size chunks (one compiled shape)."""
    fn, n, bs = self.apply_fn(name), len(arrays[0]), self.config.eval.batch_size
    outs = []
    for i in range(0, n, bs):
      chunk = [a[i:i + bs] for a in arrays]
      pad = bs - len(chunk[0])
      if pad:
        chunk = [np.concatenate([c, np.repeat(c[-1:], pad, 0)]) for c in chunk]
      outs.append(np.asarray(fn(variables, *chunk))[: bs - pad])
    return np.concatenate(outs)

  def images(self, split: str) -> dict[str, np.ndarray]:
    """The split's arrays, capped at `eval.max_examples` (a fixed, seeded subset)."""
    key = ("images", split)
    if key not in self._cache:
      source = getattr(self.run.datasets, split)
      n, cap = len(source), self.config.eval.max_examples
      idx = np.arange(n) if not cap or n <= cap else np.sort(
          np.random.default_rng(self.config.seed).choice(n, cap, replace=False))
      arrays = source.arrays if hasattr(source, "arrays") else None
      if arrays is not None:
        self._cache[key] = {k: v[idx] for k, v in arrays.items()}
      else:
        examples = [source[int(i)] for i in idx]
        self._cache[key] = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
    return self._cache[key]

  def floats(self, images_uint8: np.ndarray) -> np.ndarray:
    return np.asarray(augment.resize_batch(jnp.asarray(images_uint8), self.image_size))

  def features(self, split: str, random_init: bool = False) -> np.ndarray:
    key = ("features", split, random_init)
    if key not in self._cache:
      variables = self.random_variables if random_init else self.variables
      self._cache[key] = self.batched("embed", variables, self.floats(self.images(split)["image"]))
    return self._cache[key]

  def probe(self, random_init: bool = False) -> dict:
    key = ("probe", random_init)
    if key not in self._cache:
      e = self.config.eval
      self._cache[key] = probes.linear_probe(
          self.features("train", random_init), self.images("train")["label"],
          self.features("val", random_init), self.images("val")["label"],
          self.run.datasets.num_classes, epochs=e.probe_epochs, batch_size=e.probe_batch_size,
          lr=e.probe_lr, optimizer=e.probe_optimizer, seed=self.config.seed)
    return self._cache[key]


def linear_probe(ctx: Context) -> dict:
  trained, random = ctx.probe(), ctx.probe(random_init=True)
  return {"linear_probe_top1": trained["top1"], "linear_probe_top5": trained["top5"],
          "linear_probe_top1_random_init": random["top1"]}


def knn(ctx: Context) -> dict:
  labels = ctx.images("train")["label"], ctx.images("val")["label"]
  out = probes.knn_accuracy(ctx.features("train"), labels[0], ctx.features("val"), labels[1],
                            ctx.run.datasets.num_classes, k=ctx.config.eval.knn_k)
  return {"knn_top1": out["top1"], "knn_top5": out["top5"]}


def steering(ctx: Context) -> dict | None:
  """Steering error / cosine / γ on held-out images (DESIGN.md §7)."""
  method = ctx.run.method
  if method.transform_source is None:
    return None
  val = ctx.images("val")
  if method.transform_source == "augment":
    key = jax.random.PRNGKey(ctx.config.seed + 7)
    images = jnp.asarray(val["image"])
    views, g, params = augment.augment_batch_with_params(method.policy(), key, images, ctx.image_size)
    source = ctx.floats(val["image"])
    target = np.asarray(views)
    # γ needs one augmentation applied to two different images: reuse each view's
    # parameters on the next image of the batch.
    shifted = np.roll(val["image"], 1, axis=0)
    apply = jax.jit(jax.vmap(lambda im, p: method.policy().apply(
        im.astype(jnp.float32) / 255.0, p, ctx.image_size)))
    target_shifted = np.asarray(apply(jnp.asarray(shifted), params))
    source_shifted = ctx.floats(shifted)
  else:
    if "image2" not in val:
      return None
    source, target, g = ctx.floats(val["image"]), ctx.floats(val["image2"]), val["transform"]
    g = g[:, : method.g_dim()]
    source_shifted = target_shifted = None
  g = np.asarray(g, np.float32)
  z = ctx.batched("steer_embed", ctx.variables, source)
  z_t = ctx.batched("steer_embed", ctx.variables, target)
  z_p = ctx.batched("steer", ctx.variables, z, g)
  out = {"steering_error": equivariance.steering_error(z, z_t, z_p),
         "steering_cosine": equivariance.steering_cosine(z_t, z_p),
         "identity_cosine": equivariance.steering_cosine(z_t, z)}
  if source_shifted is not None:
    zs = ctx.batched("steer_embed", ctx.variables, source_shifted)
    zs_t = ctx.batched("steer_embed", ctx.variables, target_shifted)
    out["gamma"] = equivariance.gamma(z, zs, z_t, zs_t)
  return out


EVALUATORS: dict[str, Callable[[Context], dict | None]] = {
    "linear_probe": linear_probe,
    "knn": knn,
    "steering": steering,
}


def random_init_variables(run: train_lib.Run) -> Any:
  """Variables of a freshly initialised model (another seed): the probes' chance-plus baseline."""
  return train_lib.init_variables(run.method, run.model, run.example_batch, run.config.seed + 1)


def evaluate_run(run: train_lib.Run, workdir: str) -> dict[str, float]:
  """Runs the configured evaluators and writes report.json / report.md."""
  ctx = Context(run, train_lib.variables_for_eval(run.state), random_init_variables(run))
  report: dict[str, float] = {"train_seconds": run.train_seconds,
                              "train_steps": int(run.config.total_steps)}
  skipped = []
  for name in run.config.eval.evaluators:
    if name not in EVALUATORS:
      skipped.append(name)
      continue
    result = EVALUATORS[name](ctx)
    if result is None:
      skipped.append(name)
    else:
      report.update({k: float(v) for k, v in result.items()})
  if jax.process_index() == 0:
    write_report(report, skipped, run.config, workdir)
  return report


def write_report(report: dict, skipped: list[str], config, workdir: str) -> None:
  with open(os.path.join(workdir, "report.json"), "w") as f:
    json.dump(report, f, indent=2)
  lines = [f"# steerjax report: {config.method} on {config.data.name}", "",
           f"Model {config.model.name} ×{config.model.width_multiplier}, {config.total_steps} steps "
           f"of batch {config.batch_size}. Online encoder, BatchNorm in inference mode.", "",
           "| metric | value |", "|---|---|"]
  lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in report.items()]
  if skipped:
    lines += ["", f"Not applicable to this method/dataset: {', '.join(skipped)}."]
  with open(os.path.join(workdir, "report.md"), "w") as f:
    f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
  from steerjax import main as main_lib  # pylint: disable=g-import-not-at-top
  main_lib.run(evaluate_only=True)
