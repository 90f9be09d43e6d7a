"""Corrupted held-out images: ImageNet-C accuracy per corruption × severity, mCE, and OOD AUC.

Each of `eval.ood_corruptions` (default: ImageNet-C's 15) at severities 1..5 is read from the
prepared `cifar10_corrupted` / `imagenet2012_corrupted` tfds set when the run evaluates on that
set's clean split (cifar10 `test`, imagenet2012 `validation`) and it is prepared, else generated
by `metrics.corruptions` (equal to the `imagecorruptions` package); `corrupt_prepared_fraction`
says which. `corrupt_ce_{c}` is corruption c's error summed over severities, divided by the same
sum of the baseline run whose report.json `eval.ood_baseline` names (ImageNet-C's CE; the papers'
baseline is AlexNet), or without a baseline the plain mean error; `corrupt_mce` averages it over
the standard 15 requested (the extra corruptions are reported, not averaged, as in ImageNet-C).
The AUC separates clean val images from the same images corrupted at `eval.ood_severity` (and
from any prepared `eval.ood_datasets`), for every score of `metrics.ood.SCORES` and the feature-space kNN score
(`metrics.ood.knn_similarities`, k = `eval.ood_knn_k`, against the capped train features) ×
{no TTA, image TTA, steered TTA}; `ood_auc_{mode}_*` without a score name is the max-softmax
one. `ood_feature_norm_ratio_mean` is the mean embedding norm of corrupted over clean images
(corruption mean): above 1, a linear head is more confident on the corrupted images.
"""

import json
import os

import jax
import numpy as np

from steerjax import data
from steerjax.data import tfds_source
from steerjax.evaluators import base
from steerjax.evaluators import report as report_lib
from steerjax.evaluators import tta as tta_eval
from steerjax.metrics import corruptions
from steerjax.metrics import ood
from steerjax.metrics import probes

# data.name -> (its corrupted tfds set, the clean split it corrupts, tfds names that differ).
PREPARED = {
    "cifar10": ("cifar10_corrupted", "test",
                {"glass_blur": "frosted_glass_blur", "elastic_transform": "elastic"}),
    "imagenet2012": ("imagenet2012_corrupted", "validation", {}),
}


def baseline_errors(path: str, names) -> dict:
  """{(corruption, severity): top-1 error} of the baseline run's report.json at `path`."""
  try:
    with open(path) as f:
      report = json.load(f)
  except (OSError, ValueError) as e:
    raise ValueError(f"cannot read a report.json there ({type(e).__name__})") from None
  missing = [f"corrupt_top1_{n}_s{s}" for n in names for s in range(1, 6)
             if f"corrupt_top1_{n}_s{s}" not in report]
  if missing:
    raise ValueError(f"its report has no {missing[0]} (the baseline must be evaluated on the same "
                     "corruptions)")
  errors = {(n, s): 1 - report[f"corrupt_top1_{n}_s{s}"] for n in names for s in range(1, 6)}
  for n in names:
    if not sum(errors[n, s] for s in range(1, 6)) > 0:
      raise ValueError(f"its error on {n} is 0 at every severity: nothing to normalise by")
  return errors


def summary(errors: dict, names, base_errors: dict | None = None) -> dict:
  """Per-corruption top-1 and CE, mCE over the standard ones, and mean top-1, from
  {(corruption, severity): top-1 error} (and the baseline's, to normalise CE by)."""
  out = {}
  for name in names:
    error = sum(errors[name, s] for s in range(1, 6))
    out[f"corrupt_top1_{name}"] = 1 - error / 5
    out[f"corrupt_ce_{name}"] = (error / sum(base_errors[name, s] for s in range(1, 6))
                                 if base_errors else error / 5)
  standard = [n for n in names if n in corruptions.CORRUPTIONS]
  if standard:
    out["corrupt_mce"] = float(np.mean([out[f"corrupt_ce_{n}"] for n in standard]))
  out["corrupt_top1_mean"] = 1 - float(np.mean([errors[n, s] for n in names for s in range(1, 6)]))
  return out


def _prepared(ctx: base.Context, name: str, severity: int, indices: np.ndarray):
  """The prepared tfds copy of `indices` of the val split at (name, severity), or None."""
  d = ctx.config.data
  if d.name not in PREPARED or d.val_split != PREPARED[d.name][1]:
    return None
  dataset, split, renamed = PREPARED[d.name]
  try:
    source = tfds_source.TfdsSource(f"{dataset}/{renamed.get(name, name)}_{severity}", split,
                                    d.data_dir or None, d.image_size)
  except data.DatasetNotFoundError:
    return None
  if len(source) != len(ctx.run.datasets.val):
    return None  # another version of the clean split: examples would not line up
  return base.read(source, indices)


def _scored(ctx: base.Context, out: dict) -> dict:
  """{mode: {"probs": [B, N, C], "knn": [B, N], "norm": [B]}} of TTA views (`tta.views`)."""
  bank = ctx.features("train")
  return {mode: {"probs": v["probs"],
                 "knn": ood.knn_similarities(v["features"], bank, ctx.config.eval.ood_knn_k),
                 "norm": np.linalg.norm(v["features"][:, 0], axis=-1)}
          for mode, v in out.items()}


def _score(views: dict, score: str, n: int | None = None) -> np.ndarray:
  """One score per image from the first n views (all by default)."""
  if score == "knn":
    return views["knn"][:, :n].mean(1)
  return ood.SCORES[score](views["probs"][:, :n])


SCORE_NAMES = (*ood.SCORES, "knn")


def _aucs(clean: dict, other: dict) -> dict:
  """{(score, mode): AUC}; agreement needs several views, so not for mode "none"."""
  return {(score, mode): ood.roc_auc(_score(clean[mode], score), _score(other[mode], score))
          for mode in clean for score in SCORE_NAMES if not (score == "agreement" and mode == "none")}


def auc_by_views(clean: dict, other: dict, score: str = "msp") -> tuple[list, dict]:
  """AUC of a score over the first n views, n = 1, 2, 4, ... and N: (the n, {mode: AUC at each
  n}), the views of `tta.accuracy_by_views`; no TTA is the same at every n."""
  views = tta_eval.view_counts(max(v["probs"].shape[1] for v in clean.values()))
  return views, {mode: [ood.roc_auc(_score(clean[mode], score, n), _score(other[mode], score, n))
                        for n in views] for mode in clean}


def run(ctx: base.Context) -> dict:
  e = ctx.config.eval
  indices = ctx.capped_indices("val")[:e.tta_examples]
  val = ctx.subset("val", e.tta_examples)
  clean = _scored(ctx, tta_eval.val_views(ctx)[0])
  head = ctx.probe()["head"]
  out, per_corruption, by_views, prepared, errors, norms = {}, [], [], 0, {}, []
  for name in e.ood_corruptions:
    for severity in range(1, 6):
      read = _prepared(ctx, name, severity, indices)
      prepared += read is not None
      images, labels = ((read["image"], read["label"]) if read is not None else
                        (corruptions.corrupt(val["image"], name, severity, ctx.config.seed, indices),
                         val["label"]))
      if severity == e.ood_severity:
        scored = _scored(ctx, tta_eval.views(ctx, images)[0])
        aucs = _aucs(clean, scored)
        per_corruption.append(aucs)
        by_views.append({score: auc_by_views(clean, scored, score) for score in ("msp", "knn")})
        norms.append(scored["none"]["norm"].mean() / clean["none"]["norm"].mean())
        out.update({f"ood_auc_{mode}_{name}": v for (score, mode), v in aucs.items() if score == "msp"})
        out.update({f"ood_auc_knn_{mode}_{name}": v for (score, mode), v in aucs.items()
                    if score == "knn"})
        top1 = scored["none"]["probs"][:, 0].argmax(-1)
      else:
        top1 = np.asarray(probes.probe_logits(head, ctx.embed(images))).argmax(-1)
      out[f"corrupt_top1_{name}_s{severity}"] = float(np.mean(top1 == labels))
      errors[name, severity] = 1 - out[f"corrupt_top1_{name}_s{severity}"]
  if not e.ood_corruptions:
    return out | _prepared_ood_sets(ctx, clean)
  out.update(summary(errors, e.ood_corruptions,
                     baseline_errors(e.ood_baseline, e.ood_corruptions) if e.ood_baseline else None))
  if jax.process_index() == 0:
    severities = list(range(1, 6))
    curves = {"mean": [1 - float(np.mean([errors[n, s] for n in e.ood_corruptions]))
                       for s in severities]}
    curves.update({n: [1 - errors[n, s] for s in severities] for n in e.ood_corruptions})
    report_lib.line_plot(os.path.join(ctx.workdir, PLOT), severities, curves, xlabel="severity",
                         ylabel="linear-probe top-1", title="accuracy under corruption by severity",
                         emphasis="mean")
    views = by_views[0]["msp"][0]
    mean_aucs = {f"{mode} ({label})": list(np.mean([b[score][1][mode] for b in by_views], axis=0))
                 for score, label in (("msp", "max softmax"), ("knn", "kNN"))
                 for mode in by_views[0][score][1]}
    report_lib.line_plot(os.path.join(ctx.workdir, AUC_PLOT), views, mean_aucs, log2_x=True,
                         xlabel="views N", ylabel="clean-vs-corrupted AUC",
                         title=f"OOD AUC by views, corruption mean (severity {e.ood_severity})")
  out["corrupt_prepared_fraction"] = prepared / len(errors)
  out["ood_feature_norm_ratio_mean"] = float(np.mean(norms))
  for key in per_corruption[0]:
    score, mode = key
    mean = float(np.mean([a[key] for a in per_corruption]))
    out[f"ood_auc_{score}_{mode}_mean"] = mean
    if score == "msp":
      out[f"ood_auc_{mode}_mean"] = mean
  return out | _prepared_ood_sets(ctx, clean)


def _prepared_ood_sets(ctx: base.Context, clean: dict) -> dict:
  """AUCs against each prepared tfds out-of-distribution set of `eval.ood_datasets` present."""
  e, out = ctx.config.eval, {}
  for name in e.ood_datasets:
    other = ctx.tfds_images(name, e.ood_split, e.tta_examples)
    if other is None:
      continue
    scored = _scored(ctx, tta_eval.views(ctx, other["image"])[0])
    for (score, mode), v in _aucs(clean, scored).items():
      out[f"ood_auc_{score}_{mode}_{name.replace('/', '_')}"] = v
  return out


PLOT = "corruption_severity.png"
AUC_PLOT = "ood_auc_views.png"
EVALUATOR = base.Evaluator(
    "ood", run, section="robustness", plots=(PLOT, AUC_PLOT),
    keys=("corrupt_top1_{}_s{}", "corrupt_top1_{}", "corrupt_ce_{}", "corrupt_mce",
          "corrupt_top1_mean", "corrupt_prepared_fraction", "ood_auc_{}_{}", "ood_auc_{}_mean",
          "ood_auc_{}_{}_mean", "ood_auc_knn_{}_{}", "ood_feature_norm_ratio_mean"),
    defaults=dict(ood_severity=3,  # severity of the corrupted set in the clean-vs-corrupted AUC
                  ood_corruptions=corruptions.CORRUPTIONS,  # names from corruptions.ALL
                  ood_knn_k=50,  # neighbours of the kNN score (Sun et al., 2022, on CIFAR-10)
                  ood_baseline="",  # a baseline run's report.json: CE normalised by its errors
                  ood_datasets=(), ood_split="test"))
