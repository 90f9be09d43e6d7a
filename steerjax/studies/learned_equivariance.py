"""What affects learned equivariance (Bruintjes et al., CVPR-W 2023): data augmentation on/off,
model capacity, and the convolutional inductive bias (ResNet vs ViT vs MLP-Mixer), for
supervised classifiers; then how learned equivariance correlates with accuracy across runs."""

import os

import numpy as np

from steerjax.studies.base import Comparison, Study, scaled, seeded

NOAUG = "augment.policy=none"
CPU_WIDTHS = (0.125, 0.25, 0.5)
PAPER_WIDTHS = (0.125, 0.25, 0.5, 1.0)
CPU = ("method=supervised", "total_steps=60", "data.num_objects=600",
       'eval.evaluators=("linear_probe","learned_equivariance")')
METRIC = "equiv_corr_translate_overall"


def members(scale, seeds):
  config = "supervised_cifar10" if scale == "paper" else "default"
  spec, base = scaled(config, scale, CPU)
  settings = [(f"resnet18 x{w}", (f"model.width_multiplier={w}",))
              for w in (PAPER_WIDTHS if scale == "paper" else CPU_WIDTHS)]
  settings += [("resnet18 x0.25 no-aug", ("model.width_multiplier=0.25", NOAUG))]
  for arch in ("vit", "mixer"):
    settings += [(f"{arch} x0.25", (f"model.name={arch}", "model.width_multiplier=0.25")),
                 (f"{arch} x0.25 no-aug", (f"model.name={arch}", "model.width_multiplier=0.25", NOAUG))]
  out = []
  for setting, overrides in settings:
    out += seeded(setting, spec, (*base, *overrides), seeds)
  return out


def _ranks(x):
  return np.argsort(np.argsort(x)).astype(np.float64)


def correlations(results: list[dict], outdir: str):
  """Pearson and Spearman correlation of learned translation equivariance with accuracy across
  all finished runs; a scatter plot and a per-layer plot."""
  done = [r for r in results if r["status"] == "done" and METRIC in r["metrics"]
          and "linear_probe_top1" in r["metrics"]]
  out = {}
  lines = []
  if len(done) >= 3:
    eq = np.array([r["metrics"][METRIC] for r in done])
    acc = np.array([r["metrics"]["linear_probe_top1"] for r in done])
    out = {"runs": len(done), "pearson": float(np.corrcoef(eq, acc)[0, 1]),
           "spearman": float(np.corrcoef(_ranks(eq), _ranks(acc))[0, 1])}
    lines.append(f"Correlation of `{METRIC}` with linear-probe top-1 over {len(done)} runs: "
                 f"Pearson {out['pearson']:.3f}, Spearman {out['spearman']:.3f} (the paper finds a "
                 "positive correlation for translation on ImageNet).")
  # A Figure, not pyplot: no backend is switched, so a notebook calling this keeps its figures.
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(12, 4.5))
  ax1, ax2 = fig.subplots(1, 2)
  for r in done:
    ax1.scatter(r["metrics"][METRIC], r["metrics"]["linear_probe_top1"])
    ax1.annotate(r["setting"], (r["metrics"][METRIC], r["metrics"]["linear_probe_top1"]), fontsize=7)
    prefix = "equiv_corr_translate_"
    layers = [k[len(prefix):] for k in r["metrics"] if k.startswith(prefix) and not k.endswith("overall")]
    ax2.plot(range(len(layers)), [r["metrics"][prefix + k] for k in layers], marker="o",
             label=r["name"])
  ax1.set_xlabel(METRIC)
  ax1.set_ylabel("linear probe top-1")
  ax1.set_title("learned equivariance vs accuracy")
  ax2.set_xlabel("layer (input → output)")
  ax2.set_ylabel("translation correlation")
  ax2.set_title("per layer")
  ax2.legend(fontsize=6)
  fig.tight_layout()
  fig.savefig(os.path.join(outdir, "learned_equivariance.png"), dpi=100)
  lines.append("Plots: `learned_equivariance.png` (scatter, per layer).")
  return lines, out


STUDY = Study(
    name="learned_equivariance",
    title="What affects learned equivariance (Bruintjes et al., 2023)",
    members=members, extra=correlations,
    columns=("linear_probe_top1", "equiv_corr_translate_overall", "equiv_corr_rotate_overall",
             "lee_translate_x_overall", "lee_rotate_overall"),
    comparisons=(
        Comparison("data augmentation raises learned equivariance", METRIC,
                   "resnet18 x0.25", "resnet18 x0.25 no-aug"),
        Comparison("data augmentation raises learned equivariance", METRIC, "vit x0.25",
                   "vit x0.25 no-aug"),
        Comparison("reduced capacity raises learned equivariance", METRIC, "resnet18 x0.125",
                   "resnet18 x0.5"),
        Comparison("convolutions raise learned equivariance (ResNet vs ViT)", METRIC,
                   "resnet18 x0.25", "vit x0.25"),
        Comparison("convolutions raise learned equivariance (ResNet vs MLP-Mixer)", METRIC,
                   "resnet18 x0.25", "mixer x0.25"),
    ),
    notes=("Translations are measured with a shift of the largest stride of each network (8 for "
           "the ResNet with CIFAR stem, the patch size 4 for ViT/Mixer), so architectures are "
           "compared at different shifts; per-layer values are in each member's report.json."))
