"""What a study is: member runs (ordinary workdirs) and the paper claims compared across them.

A member is one `python -m steerjax.main` command; its `report.json` is its result. A
comparison states a paper's claimed direction between two settings (or two metrics of one
setting) and is judged on the seed means: it holds, does not hold, or the gap lies within the
seed spread (then no direction is claimed either way).
"""

import dataclasses
import os
import re
import sys
from typing import Callable, Sequence

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCALES = ("cpu", "paper", "tiny")

# `tiny` makes every member a few-second run: the pipeline tests' scale, not a result.
TINY = ("total_steps=3", "batch_size=16", "data.num_objects=30", "log_every=1",
        "checkpoint_every=3", "eval.max_examples=200", "eval.probe_epochs=2", "eval.r2_steps=5",
        "eval.tta_examples=16", "eval.tta_views=2", "progress=False")


@dataclasses.dataclass(frozen=True)
class Member:
  """One run: `setting` is its row in the table; seeds of one setting are averaged."""
  setting: str
  config: str  # configs/NAME.py[:ARG], relative to the repository root
  overrides: tuple[str, ...] = ()  # "key=value", as --config.key=value
  seed: int = 0

  @property
  def name(self) -> str:
    """Its workdir's name: the setting with runs of other characters as `_`, and the seed."""
    return re.sub(r"[^A-Za-z0-9.]+", "_", self.setting).strip("_") + f"-seed{self.seed}"

  def argv(self, workdir: str, extra: Sequence[str] = ()) -> list[str]:
    """The member's command; `extra` overrides (the study's --config.* flags) win."""
    merged = {}  # one flag per key, the last value winning, in first-seen order
    for o in (*self.overrides, f"seed={self.seed}", *extra):
      key, _, value = o.partition("=")
      merged[key] = value
    flags = [f"--config.{k}={v}" for k, v in merged.items()]
    return [sys.executable, "-m", "steerjax.main", "--config", self.config,
            "--workdir", workdir, *flags]


@dataclasses.dataclass(frozen=True)
class Comparison:
  """The claim `metric(a) op metric_b(b)`; op is ">", "<" or "~" (|gap| <= tolerance)."""
  claim: str  # the paper's claim, in words
  metric: str
  a: str
  b: str
  op: str = ">"
  metric_b: str | None = None  # compare another metric (default: the same one)
  tolerance: float = 0.0
  constant: float | None = None  # compare with this number instead of setting b

  def judge(self, rows: dict) -> dict:
    va = rows.get(self.a, {}).get(self.metric)
    vb = rows.get(self.b, {}).get(self.metric_b or self.metric)
    if self.constant is not None:
      vb = {"mean": self.constant, "spread": 0.0, "n": 1}
    out = {"claim": self.claim, "comparison": self.describe()}
    if va is None or vb is None:
      return {**out, "a": va, "b": vb, "verdict": "n/a (not measured)"}
    gap = va["mean"] - vb["mean"]
    spread = max(va["spread"], vb["spread"])
    if self.op == "~":
      verdict = "holds" if abs(gap) <= self.tolerance else "does not hold"
    else:
      wanted = gap > 0 if self.op == ">" else gap < 0
      if min(va["n"], vb["n"]) > 1 and abs(gap) <= spread:
        verdict = "within seed spread"
      else:
        verdict = "holds" if wanted else "does not hold"
        if min(va["n"], vb["n"]) == 1 and self.constant is None:
          verdict += " (one seed: no spread to judge the gap by)"
    return {**out, "a": va, "b": vb, "gap": gap, "verdict": verdict}

  def describe(self) -> str:
    rhs = f"{self.constant:g}" if self.constant is not None else f"{self.b}.{self.metric_b or self.metric}"
    op = {"~": f"≈ (±{self.tolerance:g})"}.get(self.op, self.op)
    return f"{self.a}.{self.metric} {op} {rhs}"


@dataclasses.dataclass(frozen=True)
class Study:
  name: str
  title: str
  members: Callable[[str, int], list[Member]]  # (scale, seeds) -> members
  columns: tuple[str, ...]
  comparisons: tuple[Comparison, ...]
  seeds: int = 1  # default seed count at cpu scale
  notes: str = ""
  # Extra analysis over all finished members: (results, outdir) -> (markdown lines, json).
  extra: Callable[[list[dict], str], tuple[list[str], dict]] | None = None


def scaled(config: str, scale: str, cpu: Sequence[str] = ()) -> tuple[str, tuple[str, ...]]:
  """(config spec, overrides) of a paper config at a scale: paper = as published; cpu = its
  smoke variant on synthetic3d with the study's `cpu` overrides; tiny = seconds per member."""
  path = f"configs/{config}.py"
  if scale == "paper":
    return path, ()
  return f"{path}:smoke", tuple(cpu) + (TINY if scale == "tiny" else ())


def seeded(setting: str, config: str, overrides: Sequence[str], seeds: int) -> list[Member]:
  return [Member(setting, config, tuple(overrides), seed) for seed in range(seeds)]


def config_members(configs: Sequence[tuple[str, str]], cpu: Sequence[str] = ()) -> Callable:
  """`members(scale, seeds)` for a study whose settings are (name, paper config) pairs."""
  def members(scale: str, seeds: int) -> list[Member]:
    out = []
    for setting, config in configs:
      spec, overrides = scaled(config, scale, cpu)
      out += seeded(setting, spec, overrides, seeds)
    return out
  return members


def summary(values: Sequence[float]) -> dict:
  """mean ± spread (sample standard deviation; 0 for one seed) over the finished seeds."""
  v = np.asarray(values, np.float64)
  return {"mean": float(v.mean()), "spread": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
          "n": int(len(v))}
