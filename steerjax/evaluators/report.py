"""report.json (flat keys, numbers) and report.md (sections, headline numbers first, then the
section's plots and its full table), and the line plot evaluators draw for it."""

import json
import os

# The numbers a reader looks for first in each section, in this order.
HEADLINES = {
    "representation": ("linear_probe_top1", "linear_probe_top1_random_init", "knn_top1"),
    "steering": ("steering_error", "steering_cosine", "gamma"),
    "tta": ("tta_none_top1", "tta_image_top1", "tta_steered_top1", "tta_speedup"),
    "robustness": ("corrupt_mce", "corrupt_top1_mean", "ood_auc_none_mean", "ood_auc_image_mean",
                   "ood_auc_steered_mean", "ood_auc_knn_none_mean", "ood_auc_knn_image_mean",
                   "ood_auc_knn_steered_mean"),
    "learned equivariance": ("rotation_r2_all", "equiv_corr_translate_overall"),
    "SIE retrieval": ("sie_mrr", "sie_random_init_mrr", "sie_h1", "sie_pre"),
}


def _row(key: str, value) -> str:
  return f"| {key} | {value:.4f} |" if isinstance(value, float) else f"| {key} | {value} |"


def _corruption_table(report: dict, keys: list[str]) -> tuple[list[str], set[str]]:
  """The ImageNet-C grid (corruption × severity top-1, its mean and CE) and the keys it shows."""
  names = list(dict.fromkeys(k[len("corrupt_top1_"):-3] for k in keys
                             if k.startswith("corrupt_top1_") and k[-3:-1] == "_s"))
  if not names:
    return [], set()
  lines = ["", "| corruption | s1 | s2 | s3 | s4 | s5 | mean top-1 | CE |", "|---|---|---|---|---|---|---|---|"]
  used = set()
  for name in names:
    row = [f"corrupt_top1_{name}_s{s}" for s in range(1, 6)] + [f"corrupt_top1_{name}", f"corrupt_ce_{name}"]
    used.update(k for k in row if k in report)
    lines.append(f"| {name} | " + " | ".join(f"{report[k]:.4f}" if k in report else "" for k in row) + " |")
  return lines, used


def line_plot(path: str, x, series: dict[str, list[float]], *, xlabel: str, ylabel: str,
              title: str, log2_x: bool = False, emphasis: str = "") -> None:
  """One PNG of labelled curves over a shared x, for a report.md section; the `emphasis`
  curve (e.g. a mean over the others) is drawn thick and black."""
  # A bare Figure, not pyplot: writing the file must not switch a notebook's backend.
  from matplotlib import colormaps  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  many = len(series) > 5
  fig = Figure(figsize=(7.5 if many else 5.5, 4))
  ax = fig.subplots()
  ax.set_prop_cycle(color=colormaps["tab20" if many else "tab10"].colors)
  for label, ys in series.items():
    if label == emphasis:
      ax.plot(x, ys, "k-o", lw=2.5, label=label, zorder=3)
    else:
      ax.plot(x, ys, marker="." if many else "o", lw=1 if many else 1.5, label=label)
  if log2_x:
    ax.set_xscale("log", base=2)
  ax.set_xticks(x, [str(v) for v in x])
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  if many:
    ax.legend(fontsize="x-small", loc="center left", bbox_to_anchor=(1.01, 0.5))
  else:
    ax.legend(fontsize="small")
  fig.tight_layout()
  fig.savefig(path, dpi=100)


EVAL_SECONDS = "eval_seconds_"  # + evaluator name: its wall time in the report


def is_wall_clock(key: str) -> bool:
  """Whether a report or metrics key is a time measurement (it differs between identical runs)."""
  return (key in ("train_seconds", "examples_per_s", "tta_speedup") or key.startswith(EVAL_SECONDS)
          or key.endswith("_ms_per_image"))


def write(report: dict, sections: dict[str, list[str]], skipped: dict[str, str], config,
          workdir: str, order: list[str], plots: dict[str, list[str]] | None = None) -> None:
  """report.json and report.md; `plots`: {section: PNG names in the workdir} shown in it."""
  with open(os.path.join(workdir, "report.json"), "w") as f:
    json.dump(report, f, indent=2)
  lines = [f"# steerjax report: {config.method} on {config.data.name}", "",
           f"Model {config.model.name} ×{config.model.width_multiplier}, {config.total_steps} steps "
           f"of batch {config.batch_size} ({report['train_seconds']:.0f} s). Online encoder, "
           "BatchNorm in inference mode."]
  timed = {k[len(EVAL_SECONDS):]: v for k, v in report.items() if k.startswith(EVAL_SECONDS)}
  if timed:
    lines += ["", f"Evaluation {sum(timed.values()):.0f} s: "
              + ", ".join(f"{name} {seconds:.0f} s" for name, seconds in timed.items()) + "."]
  headline = [k for s in order for k in HEADLINES.get(s, ()) if k in report]
  if headline:
    lines += ["", "**Headline:** " + ", ".join(f"{k} {report[k]:.4f}" for k in headline) + "."]
  for section in order:
    keys = sections[section]
    first = [k for k in HEADLINES.get(section, ()) if k in keys]
    lines += ["", f"## {section[0].upper()}{section[1:]}", ""]
    if first:
      lines += [", ".join(f"**{k}** {report[k]:.4f}" for k in first), ""]
    pngs = (plots or {}).get(section, ())
    if pngs:
      lines += [f"![{section}]({png})" for png in pngs] + [""]
    lines += ["| metric | value |", "|---|---|"]
    table, in_table = _corruption_table(report, keys)
    lines += [_row(k, report[k]) for k in first + [k for k in keys if k not in first and k not in in_table]]
    lines += table
  if skipped:
    lines += ["", "## Skipped", ""] + [f"- {name}: {why}" for name, why in skipped.items()]
  with open(os.path.join(workdir, "report.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
