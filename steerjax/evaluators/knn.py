"""Weighted kNN (cosine) accuracy of frozen val features against frozen train features."""

from steerjax.evaluators import base
from steerjax.metrics import probes


def run(ctx: base.Context) -> dict:
  labels = ctx.split_arrays("train")["label"], ctx.split_arrays("val")["label"]
  out = probes.knn_accuracy(ctx.features("train"), labels[0], ctx.features("val"), labels[1],
                            ctx.run.datasets.num_classes, k=ctx.config.eval.knn_k)
  return {"knn_top1": out["top1"], "knn_top5": out["top5"]}


EVALUATOR = base.Evaluator("knn", run, section="representation", keys=("knn_top1", "knn_top5"),
                           defaults=dict(knn_k=20))
