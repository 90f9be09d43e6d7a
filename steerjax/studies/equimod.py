"""EquiMod (Devillers & Lefort, ICLR 2023): SimCLR and BYOL with and without the equivariant
module on the same budget; their headline is the linear-probe top-1."""

from steerjax.studies.base import Comparison, Study, config_members

CONFIGS = (("SimCLR", "simclr_cifar10"), ("SimCLR+EquiMod", "equimod_simclr_cifar10"),
           ("BYOL", "byol_cifar10"), ("BYOL+EquiMod", "equimod_byol_cifar10"))
CPU = ("total_steps=150", 'eval.evaluators=("linear_probe","knn","steering","factor_probe")')
KEPT = ("crop", "brightness", "contrast", "saturation")  # what the augmentations change


members = config_members(CONFIGS, CPU)


STUDY = Study(
    name="equimod", title="EquiMod: an equivariance module (Devillers & Lefort, 2023)",
    members=members, seeds=3,
    columns=("linear_probe_top1", "linear_probe_top1_random_init", "knn_top1", "steering_error",
             "steering_cosine", *(f"factor_r2_{f}" for f in KEPT),
             *(f"factor_r2_{f}_random_init" for f in KEPT)),
    comparisons=(
        Comparison("EquiMod raises SimCLR's linear probe (CIFAR-10 90.96 → 92.79)",
                   "linear_probe_top1", "SimCLR+EquiMod", "SimCLR"),
        Comparison("EquiMod raises BYOL's linear probe (CIFAR-10 90.44 → 91.57)",
                   "linear_probe_top1", "BYOL+EquiMod", "BYOL"),
        Comparison("EquiMod's predictor explains the augmented view (steering error < 1)",
                   "steering_error", "SimCLR+EquiMod", "SimCLR+EquiMod", "<", constant=1.0),
        *(Comparison(f"EquiMod keeps more of what augmentations change: {f} R²",
                     f"factor_r2_{f}", a, b)
          for f in KEPT for a, b in (("SimCLR+EquiMod", "SimCLR"), ("BYOL+EquiMod", "BYOL"))),
    ),
    notes=("factor_r2_*: ridge R² of each augmentation parameter of one training-policy view, "
           "regressed from the view's frozen features (evaluators.factor_probe); the "
           "_random_init columns are a randomly initialised encoder's, the reference a trained "
           "invariant encoder falls below."))
