"""Steerable equivariant representation learning (Bhardwaj et al., 2023): invariant vs steerable
SimCLR and supervised vs supervised + steerer on the same data, budget and seeds."""

from steerjax.studies.base import Comparison, Study, scaled, seeded

SETTINGS = (("SimCLR", ("method=simclr",)), ("steerable SimCLR", ("method=steerable", "task=simclr")),
            ("supervised", ("method=supervised",)),
            ("supervised+steerer", ("method=steerable", "task=supervised")))
CPU = ("total_steps=200", "data.num_objects=600", "eval.max_examples=1000",
       'eval.evaluators=("linear_probe","steering","tta","ood","factor_probe")')


def members(scale, seeds):
  out = []
  for setting, method in SETTINGS:
    spec, overrides = scaled("steerable_cifar10" if scale == "paper" else "default", scale, CPU)
    out += seeded(setting, spec, (*overrides, *method), seeds)
  return out


_TTA = "steered TTA within 1 point of image TTA"
FACTORS = ("crop", "brightness", "contrast", "saturation", "floor_hue", "light_hue", "rotation")
STUDY = Study(
    name="steerable", title="Steerable equivariant representation learning (Bhardwaj et al., 2023)",
    members=members, seeds=3,
    columns=("linear_probe_top1", "linear_probe_top1_random_init", "linear_probe_top1_pixels",
             "steering_error",
             "tta_none_top1", "tta_image_top1", "tta_steered_top1", "tta_image_ms_per_image",
             "tta_steered_ms_per_image", "tta_speedup", "ood_auc_none_mean",
             "ood_auc_image_mean", "ood_auc_steered_mean", "ood_auc_agreement_steered_mean",
             "ood_auc_knn_none_mean", "ood_auc_knn_image_mean", "ood_auc_knn_steered_mean",
             "ood_feature_norm_ratio_mean", "corrupt_top1_mean",
             *(f"factor_r2_{f}" for f in FACTORS)),
    comparisons=(
        Comparison(_TTA, "tta_steered_top1", "steerable SimCLR", "steerable SimCLR", "~",
                   metric_b="tta_image_top1", tolerance=0.01),
        Comparison(_TTA, "tta_steered_top1", "supervised+steerer", "supervised+steerer", "~",
                   metric_b="tta_image_top1", tolerance=0.01),
        Comparison("steered TTA at >= 10x less time than image TTA (paper: ~50x at large N)",
                   "tta_speedup", "supervised+steerer", "supervised+steerer", ">", constant=10.0),
        Comparison("the steerer explains the change (steering error < 1)", "steering_error",
                   "steerable SimCLR", "steerable SimCLR", "<", constant=1.0),
        Comparison("steerable above invariant on the linear probe (paper: +1–3 points)",
                   "linear_probe_top1", "steerable SimCLR", "SimCLR"),
        Comparison("steerable above invariant on the linear probe (paper: +1–3 points)",
                   "linear_probe_top1", "supervised+steerer", "supervised"),
        *(Comparison(f"steerable keeps more of what augmentations change: {f} R²",
                     f"factor_r2_{f}", a, b)
          for f in ("crop", "brightness", "contrast", "saturation")
          for a, b in (("steerable SimCLR", "SimCLR"), ("supervised+steerer", "supervised"))),
        *(Comparison(f"steered TTA raises the clean-vs-corrupted OOD AUC ({label})",
                     f"ood_auc_{score}steered_mean", setting, setting,
                     metric_b=f"ood_auc_{score}none_mean")
          for score, label in (("", "max softmax"), ("knn_", "kNN score"))
          for setting in ("steerable SimCLR", "supervised+steerer")),
        Comparison("steerable more robust to corruptions", "corrupt_top1_mean",
                   "supervised+steerer", "supervised"),
    ),
    notes=("OOD AUC columns use the max-softmax score unless named (agreement: the fraction of "
           "views that agree with the averaged prediction; knn: the deep-nearest-neighbour "
           "similarity to the train features, blind to the feature norm). "
           "ood_feature_norm_ratio_mean > 1: corrupted images have larger embeddings, so a "
           "linear head is more confident on them (softmax AUC below 0.5). factor_r2_*: ridge R² "
           "of each augmentation parameter or rendered factor from the frozen features "
           "(evaluators.factor_probe). TTA times per image are measured in the same run, "
           "compilation excluded; the speedup is bounded by the number of views."))
