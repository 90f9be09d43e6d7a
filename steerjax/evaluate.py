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
from steerjax import data
from steerjax import tta
from steerjax import train as train_lib
from steerjax.data import rotations
from steerjax.data import tfds_source
from steerjax.metrics import corruptions
from steerjax.metrics import equivariance
from steerjax.metrics import learned_equivariance
from steerjax.metrics import ood
from steerjax.metrics import probes


@dataclasses.dataclass
class Context:
  """A trained model plus cached features, shared by all evaluators."""
  run: train_lib.Run
  workdir: str
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

  def tfds_examples(self, name: str, split: str) -> dict[str, np.ndarray] | None:
    """Up to `eval.max_examples` examples of a prepared tfds dataset; None when it is absent."""
    key = ("tfds", name, split)
    if key not in self._cache:
      try:
        source = tfds_source.TfdsSource(name, split, self.config.data.data_dir or None,
                                        self.config.data.image_size)
      except data.DatasetNotFoundError:
        self._cache[key] = None
      else:
        n = min(len(source), self.config.eval.max_examples or len(source))
        examples = [source[i] for i in range(n)]
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


def _probs(ctx: Context, features: np.ndarray) -> np.ndarray:
  return np.asarray(jax.nn.softmax(probes.probe_logits(ctx.probe()["head"], features), -1))


def _tta_probs(ctx: Context, images_uint8: np.ndarray) -> dict[str, np.ndarray]:
  """Class probabilities without TTA, with image-space TTA and with steered TTA.

  Both TTA paths use the same N sampled augmentations per image and the linear-probe head; the
  steered path embeds the plain image once and applies ρ(g_n) to that one embedding.
  """
  method, n = ctx.run.method, ctx.config.eval.tta_views
  z = ctx.batched("embed", ctx.variables, ctx.floats(images_uint8))
  out = {"none": _probs(ctx, z)}
  if not method.steers_representation:
    return out
  images, image_probs, gs = jnp.asarray(images_uint8), 0.0, []
  for k in range(n):
    views, g = augment.augment_batch(method.policy(), jax.random.PRNGKey(1000 + k), images,
                                     ctx.image_size)
    image_probs += _probs(ctx, ctx.batched("embed", ctx.variables, np.asarray(views))) / n
    gs.append(np.asarray(g))
  steer = lambda z_, g_: ctx.apply_fn("steer")(ctx.variables, z_, g_)
  head = lambda z_: probes.probe_logits(ctx.probe()["head"], z_)
  steered = jax.jit(lambda z_, g_: tta.steered_tta(head, z_, g_, steer_fn=steer))
  out["image"] = image_probs
  out["steered"] = np.asarray(steered(jnp.asarray(z), jnp.asarray(np.stack(gs, 1))))
  return out


def transfer(ctx: Context) -> dict | None:
  """Linear probes on the frozen encoder for each `eval.transfer_datasets` that is prepared."""
  e, out = ctx.config.eval, {}
  for name in e.transfer_datasets:
    train = ctx.tfds_examples(name, "train")
    test = ctx.tfds_examples(name, "test") or ctx.tfds_examples(name, "validation")
    if train is None or test is None:
      continue
    feats = [ctx.batched("embed", ctx.variables, ctx.floats(d["image"])) for d in (train, test)]
    num_classes = int(max(train["label"].max(), test["label"].max())) + 1
    result = probes.linear_probe(feats[0], train["label"], feats[1], test["label"], num_classes,
                                 epochs=e.probe_epochs, batch_size=e.probe_batch_size,
                                 lr=e.probe_lr, optimizer=e.probe_optimizer, seed=ctx.config.seed)
    out[f"transfer_{name.replace('/', '_')}_top1"] = result["top1"]
  return out or None


def _subset(ctx: Context, split: str, n: int) -> dict[str, np.ndarray]:
  return {k: v[:n] for k, v in ctx.images(split).items()}


def test_time_augmentation(ctx: Context) -> dict | None:
  """Top-1 of the linear probe with no TTA, image-space TTA and steered TTA."""
  if not ctx.run.method.steers_representation:
    return None
  val = _subset(ctx, "val", ctx.config.eval.tta_examples)
  probs = _tta_probs(ctx, val["image"])
  return {f"tta_{mode}_top1": float(np.mean(p.argmax(-1) == val["label"])) for mode, p in probs.items()}


def out_of_distribution(ctx: Context) -> dict:
  """Corrupted held-out images: accuracy per corruption × severity, and clean-vs-corrupted AUC."""
  e = ctx.config.eval
  val = _subset(ctx, "val", e.tta_examples)
  clean = _tta_probs(ctx, val["image"])
  out, aucs = {}, {mode: [] for mode in clean}
  for name in corruptions.CORRUPTIONS:
    for severity in range(1, 6):
      images = corruptions.corrupt(val["image"], name, severity, seed=ctx.config.seed)
      if severity == e.ood_severity:
        probs = _tta_probs(ctx, images)
        for mode, p in probs.items():
          auc = ood.ood_auc(clean[mode], p, "msp")
          aucs[mode].append(auc)
          out[f"ood_auc_{mode}_{name}"] = auc
      else:
        probs = {"none": _probs(ctx, ctx.batched("embed", ctx.variables, ctx.floats(images)))}
      out[f"corrupt_top1_{name}_s{severity}"] = float(np.mean(probs["none"].argmax(-1) == val["label"]))
  out["corrupt_top1_mean"] = float(np.mean([v for k, v in out.items() if k.startswith("corrupt_top1")]))
  # Prepared tfds out-of-distribution sets (e.g. cifar10_corrupted/gaussian_noise_3), when present.
  for name in e.ood_datasets:
    other = ctx.tfds_examples(name, e.ood_split)
    if other is None:
      continue
    probs = _tta_probs(ctx, other["image"][: e.tta_examples])
    for mode, p in probs.items():
      out[f"ood_auc_{mode}_{name.replace('/', '_')}"] = ood.ood_auc(clean[mode], p, "msp")
  out.update({f"ood_auc_{mode}_mean": float(np.mean(v)) for mode, v in aucs.items()})
  return out


def layer_equivariance(ctx: Context) -> dict:
  """Per-layer learned equivariance: Bruintjes et al.'s correlation and Gruver et al.'s LEE."""
  encoder = ctx.run.method.build_model().encoder
  variables = {c: ctx.variables[c]["encoder"] for c in ("params", "batch_stats")}
  sown = learned_equivariance.sown_features_fn(encoder, variables)
  depth_order = list(encoder.strides) + ["output"]  # input to output, as the plot reads

  def features_fn(x):
    feats = sown(x)
    return {k: feats[k] for k in depth_order}

  images = jnp.asarray(ctx.floats(_subset(ctx, "val", 64)["image"]))
  results = {"correlation": learned_equivariance.correlation_equivariance(
      jax.jit(features_fn), images, encoder.strides)}
  results["lie_derivative"] = {g: learned_equivariance.layer_lie_derivatives(
      features_fn, images, encoder.strides, g) for g in ("translate_x", "rotate")}
  # Jitted functions return dicts in sorted-key order; the plot reads input to output.
  results = {k: {fam: {n: layers[n] for n in depth_order + ["overall"] if n in layers}
                 for fam, layers in v.items()} for k, v in results.items()}
  if jax.process_index() == 0:
    learned_equivariance.plot_layer_equivariance(
        results, os.path.join(ctx.workdir, "layer_equivariance.png"))
  out = {f"equiv_corr_{t}_{layer}": v for t, layers in results["correlation"].items()
         for layer, v in layers.items()}
  out.update({f"lee_{g}_{layer}": v for g, layers in results["lie_derivative"].items()
              for layer, v in layers.items()})
  return out


def _view_table(ctx: Context) -> np.ndarray | None:
  """[objects, views] indices into the capped val split, whole objects only."""
  val = ctx.images("val")
  if "object_id" not in val:
    return None
  ids, counts = np.unique(val["object_id"], return_counts=True)
  whole = np.isin(val["object_id"], ids[counts == counts.max()])
  order = np.lexsort((val["view_id"], val["object_id"]))
  order = order[whole[order]]
  return order.reshape(-1, counts.max())


def sie_retrieval(ctx: Context) -> dict | None:
  """SIE's MRR / H@k and PRE of the predictor on held-out objects (DESIGN.md §7).

  Also the MRR of a randomly initialised model: with V views per object, chance is far from 0
  (about (1/V) Σ_r 1/r), so the trained figure means little without it.
  """
  method, table = ctx.run.method, _view_table(ctx)
  if method.transform_source != "pairs" or table is None:
    return None
  val = ctx.images("val")
  latent = val["latent"][table]  # [O, V, 7]
  g = rotations.relative_transform(np.repeat(latent[:, :1], latent.shape[1], 1), latent)
  g = g[..., : method.g_dim()].astype(np.float32)
  images = ctx.floats(val["image"])
  out = {}
  for prefix, variables in (("sie", ctx.variables), ("sie_random_init", ctx.random_variables)):
    z = ctx.batched("steer_embed", variables, images)[table]
    predict = lambda z_, g_, v=variables: ctx.batched("steer", v, np.asarray(z_), np.asarray(g_))
    scores = equivariance.sie_retrieval(jnp.asarray(z), jnp.asarray(g), predict)
    if prefix == "sie":
      flat_z, flat_g = z.reshape(-1, z.shape[-1]), g.reshape(-1, g.shape[-1])
      pred = predict(np.repeat(z[:, 0], z.shape[1], 0), flat_g)
      pose = rotations.matrix_to_quaternion(rotations.euler_to_matrix(latent[..., :3])).reshape(-1, 4)
      scores["pre"] = equivariance.pre(pred, pose, flat_z, pose)
    else:
      scores = {"mrr": scores["mrr"]}
    out.update({f"{prefix}_{k.replace('@', '')}": v for k, v in scores.items()})
  return out


def rotation_r2(ctx: Context) -> dict | None:
  """R² of the relative rotation regressed from a pair of embeddings (train pairs → val pairs)."""
  if "latent" not in ctx.images("val"):
    return None
  e, rng = ctx.config.eval, np.random.default_rng(ctx.config.seed)
  data = {}
  for split in ("train", "val"):
    arrays, feats = ctx.images(split), ctx.features(split)
    a, b = rng.permutation(len(feats)), rng.permutation(len(feats))
    # Two views of the same object where the split has several, else any two images.
    if "object_id" in arrays:
      b = _partner_view(arrays["object_id"], a, rng)
    y = rotations.relative_quaternion(arrays["latent"][a], arrays["latent"][b]).astype(np.float32)
    data[split] = feats[a], feats[b], y
  out = {}
  for part, sl in (("all", slice(None)),) + ctx.run.method.representation_parts:
    (ta, tb, ty), (va, vb, vy) = data["train"], data["val"]
    out[f"rotation_r2_{part}"] = equivariance.regress_r2(
        ta[:, sl], tb[:, sl], ty, va[:, sl], vb[:, sl], vy, hidden=(e.r2_hidden, e.r2_hidden),
        steps=e.r2_steps, seed=ctx.config.seed)
  return out


def _partner_view(object_id: np.ndarray, anchors: np.ndarray, rng) -> np.ndarray:
  """For each anchor index, a random index of a *different* view of the same object."""
  by_object: dict[int, np.ndarray] = {}
  for obj in np.unique(object_id):
    by_object[int(obj)] = np.flatnonzero(object_id == obj)
  partners = []
  for i in anchors:
    choices = by_object[int(object_id[i])]
    choices = choices[choices != i] if len(choices) > 1 else choices
    partners.append(rng.choice(choices))
  return np.asarray(partners)


EVALUATORS: dict[str, Callable[[Context], dict | None]] = {
    "linear_probe": linear_probe,
    "knn": knn,
    "steering": steering,
    "sie_retrieval": sie_retrieval,
    "rotation_r2": rotation_r2,
    "learned_equivariance": layer_equivariance,
    "tta": test_time_augmentation,
    "ood": out_of_distribution,
    "transfer": transfer,
}


def random_init_variables(run: train_lib.Run) -> Any:
  """Variables of a freshly initialised model (another seed): the probes' chance-plus baseline."""
  return train_lib.init_variables(run.method, run.model, run.example_batch, run.config.seed + 1)


def evaluate_run(run: train_lib.Run, workdir: str) -> dict[str, float]:
  """Runs the configured evaluators and writes report.json / report.md."""
  ctx = Context(run, workdir, train_lib.variables_for_eval(run.state), random_init_variables(run))
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
