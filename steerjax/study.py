"""Run a paper's comparison as a study: `python -m steerjax.study NAME --workdir DIR
[--scale cpu|paper] [--seeds N] [--config.KEY=VALUE ...]`.

Each member is an ordinary `python -m steerjax.main` workdir under DIR, run as a subprocess so
one failure is recorded (first line of its error) while the others go on; a member with a
`report.json` is finished and is not rerun, an interrupted one resumes from its checkpoints.
The study then writes DIR/study.md, DIR/study.json and DIR/study.png: a row per setting (mean ±
spread over seeds), the paper's claimed direction beside each measured comparison, and the
command of each row. `--config.*` flags go to every member, after the study's own settings.
"""

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time

from steerjax import studies
from steerjax.studies import base

_ERROR = re.compile(r"^(error:|[A-Za-z_.]*(Error|Exception|Interrupt)\b)")


def first_error_line(log: str, returncode: int) -> str:
  """The line that names what went wrong: main's one-line `error:`, else the exception line of
  the last traceback, else the last line printed."""
  lines = [line.strip() for line in log.splitlines() if line.strip()]
  for line in lines:
    if line.startswith("error:"):
      return line
  for line in reversed(lines):
    if _ERROR.match(line):
      return line
  return lines[-1] if lines else f"exit status {returncode}"


def run_member(member: base.Member, workdir: str, extra: list[str]) -> dict:
  """Runs (or reuses) one member; returns its record with `status` done | failed."""
  argv = member.argv(workdir, extra)
  record = {"name": member.name, "setting": member.setting, "seed": member.seed,
            "workdir": workdir, "command": shlex.join(["python", *argv[1:]])}
  report = os.path.join(workdir, "report.json")
  if os.path.exists(report):
    record["reused"] = True
  else:
    os.makedirs(workdir, exist_ok=True)
    start = time.time()
    with open(os.path.join(workdir, "study_member.log"), "w") as log:
      proc = subprocess.run(argv, cwd=base.ROOT, stdout=log, stderr=subprocess.STDOUT, check=False)
    record.update(seconds=round(time.time() - start, 1), reused=False)
    if proc.returncode or not os.path.exists(report):
      with open(os.path.join(workdir, "study_member.log")) as log:
        error = first_error_line(log.read(), proc.returncode)
      return {**record, "status": "failed", "error": error}
  with open(report) as f:
    metrics = json.load(f)
  return {**record, "status": "done", "metrics": metrics}


def aggregate(study: base.Study, results: list[dict]) -> dict:
  """{setting: {metric: mean/spread/n}} over the finished seeds of each setting."""
  rows = {}
  for r in results:
    rows.setdefault(r["setting"], {})
  for setting in rows:
    done = [r["metrics"] for r in results if r["setting"] == setting and r["status"] == "done"]
    keys = set(study.columns) | {c.metric for c in study.comparisons} | {
        c.metric_b for c in study.comparisons if c.metric_b}
    for key in sorted(keys):
      values = [m[key] for m in done if isinstance(m.get(key), (int, float))]
      if values:
        rows[setting][key] = base.summary(values)
  return rows


def _cell(value) -> str:
  if value is None:
    return "n/a"
  if value["n"] > 1:
    return f"{value['mean']:.3f} ± {value['spread']:.3f}"
  return f"{value['mean']:.3f}"


def write_outputs(study: base.Study, scale: str, outdir: str, results: list[dict], seconds: float):
  rows = aggregate(study, results)
  verdicts = [c.judge(rows) for c in study.comparisons]
  extra_lines, extra_json = study.extra(results, outdir) if study.extra else ([], {})
  settings = list(dict.fromkeys(r["setting"] for r in results))
  failed = [r for r in results if r["status"] == "failed"]
  lines = [f"# Study `{study.name}`: {study.title}", "",
           f"Scale `{scale}`; {len(results)} member runs ({sum(not r.get('reused') for r in results)} "
           f"run now, {sum(bool(r.get('reused')) for r in results)} reused, {len(failed)} failed); "
           f"this invocation took {seconds / 60:.1f} min. Values are mean ± sample std over seeds.",
           "", "| setting | seeds | " + " | ".join(study.columns) + " |",
           "|---" * (len(study.columns) + 2) + "|"]
  for s in settings:
    members = [r for r in results if r["setting"] == s]
    done = sum(r["status"] == "done" for r in members)
    cells = [_cell(rows[s].get(col)) for col in study.columns]
    seeds = f"{done}/{len(members)}" + (" (failed)" if done < len(members) else "")
    lines.append(f"| {s} | {seeds} | " + " | ".join(cells) + " |")
  lines += ["", "| paper's claim | measured comparison | values | verdict at this scale |",
            "|---|---|---|---|"]
  for v in verdicts:
    vals = f"{_cell(v['a'])} vs {_cell(v['b'])}"
    lines.append(f"| {v['claim']} | `{v['comparison']}` | {vals} | {v['verdict']} |")
  if failed:
    lines += ["", "Failed members:", ""]
    lines += [f"- `{r['name']}`: {r['error']}" for r in failed]
  lines += ["", "Commands (one per member; rerunning the study reuses finished ones):", ""]
  lines += [f"- `{r['name']}`: `{r['command']}`" for r in results]
  if study.notes:
    lines += ["", study.notes]
  if extra_lines:
    lines += [""] + extra_lines
  with open(os.path.join(outdir, "study.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  with open(os.path.join(outdir, "study.json"), "w") as f:
    json.dump({"study": study.name, "scale": scale, "seconds": seconds, "members": results,
               "rows": rows, "comparisons": verdicts, "extra": extra_json}, f, indent=1)
  plot(study, rows, settings, os.path.join(outdir, "study.png"))
  return verdicts


def plot(study: base.Study, rows: dict, settings: list[str], path: str) -> None:
  """One panel per column, a bar per setting with its seed spread."""
  # A Figure, not pyplot: no backend is switched, so a notebook calling this keeps its figures.
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  cols = [c for c in study.columns if any(c in rows[s] for s in settings)] or list(study.columns[:1])
  fig = Figure(figsize=(3.2 * len(cols), 0.35 * len(settings) + 1.5))
  axes = fig.subplots(1, len(cols), squeeze=False, sharey=True)
  for ax, col in zip(axes[0], cols):
    means = [rows[s].get(col, {}).get("mean", 0.0) for s in settings]
    spreads = [rows[s].get(col, {}).get("spread", 0.0) for s in settings]
    ax.barh(range(len(settings)), means, xerr=spreads)
    ax.set_yticks(range(len(settings)), settings)
    ax.set_title(col, fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=90)


def run_study(study: base.Study, outdir: str, scale: str, seeds: int, extra: list[str],
              members: list[base.Member] | None = None) -> list[dict]:
  start = time.time()
  os.makedirs(outdir, exist_ok=True)
  results = []
  for member in members if members is not None else study.members(scale, seeds):
    print(f"[study {study.name}] {member.name}", flush=True)
    results.append(run_member(member, os.path.join(outdir, member.name), extra))
    if results[-1]["status"] == "failed":
      print(f"  failed: {results[-1]['error']}", flush=True)
    write_outputs(study, scale, outdir, results, time.time() - start)  # partial results survive
  return results


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(prog="python -m steerjax.study", description=__doc__.split("\n")[0])
  parser.add_argument("name")
  parser.add_argument("--workdir", default=None)
  parser.add_argument("--scale", default="cpu", choices=("cpu", "paper", "tiny"))
  parser.add_argument("--seeds", type=int, default=None)
  args, rest = parser.parse_known_args(argv)
  if args.name not in studies.NAMES:
    print(f"error: unknown study {args.name!r}; known studies: {', '.join(studies.NAMES)}",
          file=sys.stderr)
    return 2
  bad = [a for a in rest if not a.startswith("--config.") or "=" not in a]
  if bad:
    print(f"error: {bad[0]!r} is not a --config.KEY=VALUE override", file=sys.stderr)
    return 2
  study = studies.get_study(args.name)
  seeds = args.seeds or (study.seeds if args.scale != "tiny" else 1)
  if seeds < 1:
    print(f"error: --seeds={seeds} is not allowed; expected a positive number", file=sys.stderr)
    return 2
  outdir = os.path.abspath(args.workdir or os.path.join("runs", f"study_{args.name}"))
  results = run_study(study, outdir, args.scale, seeds, [a[len("--config."):] for a in rest])
  print(f"wrote {os.path.join(outdir, 'study.md')}")
  return 1 if all(r["status"] == "failed" for r in results) else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
