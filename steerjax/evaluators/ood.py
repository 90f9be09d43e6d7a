"""Corrupted held-out images: accuracy per corruption × severity, and OOD AUC.

The AUC separates clean val images from the same images corrupted at `eval.ood_severity`
(and from any prepared `eval.ood_datasets`), for every score of `metrics.ood.SCORES` × {no
TTA, image TTA, steered TTA}; `ood_auc_{mode}_*` without a score name is the max-softmax one.
"""

import numpy as np

from steerjax.evaluators import base
from steerjax.evaluators import tta as tta_eval
from steerjax.metrics import corruptions
from steerjax.metrics import ood
from steerjax.metrics import probes


def _aucs(clean: dict, other: dict) -> dict:
  """{(score, mode): AUC}; agreement needs several views, so not for mode "none"."""
  return {(score, mode): ood.ood_auc(clean[mode], other[mode], score)
          for mode in clean for score in ood.SCORES if not (score == "agreement" and mode == "none")}


def run(ctx: base.Context) -> dict:
  e = ctx.config.eval
  val = ctx.subset("val", e.tta_examples)
  clean = tta_eval.view_probabilities(ctx, val["image"])
  head = ctx.probe()["head"]
  out, per_corruption = {}, []
  for name in corruptions.CORRUPTIONS:
    for severity in range(1, 6):
      images = corruptions.corrupt(val["image"], name, severity, seed=ctx.config.seed)
      if severity == e.ood_severity:
        probs = tta_eval.view_probabilities(ctx, images)
        aucs = _aucs(clean, probs)
        per_corruption.append(aucs)
        out.update({f"ood_auc_{mode}_{name}": v for (score, mode), v in aucs.items() if score == "msp"})
        top1 = probs["none"][:, 0].argmax(-1)
      else:
        top1 = np.asarray(probes.probe_logits(head, ctx.embed(images))).argmax(-1)
      out[f"corrupt_top1_{name}_s{severity}"] = float(np.mean(top1 == val["label"]))
  out["corrupt_top1_mean"] = float(np.mean([v for k, v in out.items() if k.startswith("corrupt_top1")]))
  for key in per_corruption[0]:
    score, mode = key
    mean = float(np.mean([a[key] for a in per_corruption]))
    out[f"ood_auc_{score}_{mode}_mean"] = mean
    if score == "msp":
      out[f"ood_auc_{mode}_mean"] = mean
  # Prepared tfds out-of-distribution sets (e.g. cifar10_corrupted/gaussian_noise_3), when present.
  for name in e.ood_datasets:
    other = ctx.tfds_images(name, e.ood_split, e.tta_examples)
    if other is None:
      continue
    probs = tta_eval.view_probabilities(ctx, other["image"])
    for (score, mode), v in _aucs(clean, probs).items():
      out[f"ood_auc_{score}_{mode}_{name.replace('/', '_')}"] = v
  return out


EVALUATOR = base.Evaluator(
    "ood", run, section="robustness",
    keys=("corrupt_top1_{}_s{}", "corrupt_top1_mean", "ood_auc_{}_{}", "ood_auc_{}_mean",
          "ood_auc_{}_{}_mean"),
    defaults=dict(ood_severity=3,  # severity of the corrupted set in the clean-vs-corrupted AUC
                  ood_datasets=(), ood_split="test"))
