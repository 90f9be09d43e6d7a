"""SIE (Garrido et al., ICML 2023, Table 1): invariant baselines, EquiMod variants and SIE on
two rendered views of one object (synthetic3d pairs; 3DIEBench when `data.root` is set)."""

from steerjax.studies.base import Comparison, Study, config_members

CONFIGS = (("VICReg", "vicreg_3diebench"), ("SimCLR", "simclr_3diebench"),
           ("SimCLR+AugSelf", "augself_3diebench"), ("EquiMod", "equimod_3diebench"),
           ("VICReg+EquiMod", "vicreg_equimod_3diebench"), ("SIE", "sie_3diebench"),
           ("SIE-RotColor", "sie_rotcolor_3diebench"))
CPU = ("total_steps=300", 'eval.evaluators=("linear_probe","sie_retrieval","rotation_r2")')


members = config_members(CONFIGS, CPU)


_R2 = "R² of the relative rotation from the whole representation"
STUDY = Study(
    name="sie", title="SIE: split invariant-equivariant representations (Garrido et al., 2023)",
    members=members,
    columns=("linear_probe_top1", "linear_probe_top1_pixels", "sie_mrr", "sie_random_init_mrr",
             "sie_h1", "sie_h5", "sie_pre",
             "rotation_r2_inv", "rotation_r2_equi", "rotation_r2_all"),
    comparisons=(
        Comparison(f"SIE above the invariant baselines: {_R2}", "rotation_r2_all", "SIE", "VICReg"),
        Comparison(f"SIE above the invariant baselines: {_R2}", "rotation_r2_all", "SIE", "SimCLR"),
        Comparison("SIE's predictor retrieves views better than EquiMod's (MRR)", "sie_mrr", "SIE",
                   "EquiMod"),
        Comparison("SIE's predictor retrieves views better than VICReg+EquiMod's (MRR)", "sie_mrr",
                   "SIE", "VICReg+EquiMod"),
        Comparison("SIE's invariant half is less equivariant than its equivariant half (R²)",
                   "rotation_r2_inv", "SIE", "SIE", "<", metric_b="rotation_r2_equi"),
        Comparison("The predictor beats a random network (MRR)", "sie_mrr", "SIE", "SIE",
                   metric_b="sie_random_init_mrr"),
    ),
    notes="Invariant methods have no predictor, so their MRR/H@k/PRE are absent (n/a).")
