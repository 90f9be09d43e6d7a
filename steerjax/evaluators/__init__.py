"""Evaluators as plug-ins: every module here that defines `EVALUATOR` is one evaluator.

A new evaluator is one new file (its `run`, report keys and `eval` config defaults); the
registry, `config.base_config` and the report pick it up. `evaluate_run` always evaluates the
*online* encoder with BatchNorm in inference mode, embeds each split once and hands the cached
features to every evaluator named in `config.eval.evaluators`. An evaluator that does not
apply raises `NotApplicable` and is listed in the report as skipped, with its reason.
"""

import importlib
import os
import pkgutil
import time
from typing import Any

import jax

from steerjax import train as train_lib
from steerjax.evaluators import report as report_lib
from steerjax.evaluators.base import Context, Evaluator, NotApplicable

# Report order: the sections of report.md.
SECTIONS = ("representation", "steering", "tta", "robustness", "learned equivariance",
            "SIE retrieval")


def _discover() -> dict[str, Evaluator]:
  found = {}
  for info in pkgutil.iter_modules(__path__):
    module = importlib.import_module(f"{__name__}.{info.name}")
    if hasattr(module, "EVALUATOR"):
      found[module.EVALUATOR.name] = module.EVALUATOR
  return dict(sorted(found.items(), key=lambda kv: SECTIONS.index(kv[1].section)))


REGISTRY: dict[str, Evaluator] = _discover()


def config_defaults() -> dict[str, Any]:
  """The `eval` keys every evaluator declares."""
  out = {}
  for ev in REGISTRY.values():
    out.update(ev.defaults)
  return out


def random_init_variables(run: train_lib.Run) -> Any:
  """Variables of a freshly initialised model (another seed): the probes' chance-plus baseline."""
  return train_lib.init_variables(run.method, run.model, run.example_batch, run.config.seed + 1)


def evaluate_run(run: train_lib.Run, workdir: str, ctx: Context | None = None) -> dict[str, float]:
  """Runs the configured evaluators and writes report.json / report.md.

  `ctx`: a Context of this run whose cached features and probe heads are reused
  (`steerjax.api.Run` keeps one); by default a fresh one.
  """
  if ctx is None:
    ctx = Context(run, workdir, train_lib.variables_for_eval(run.state), random_init_variables(run))
  report: dict[str, float] = {"train_seconds": run.train_seconds,
                              "train_steps": int(run.config.total_steps)}
  sections: dict[str, list[str]] = {}
  plots: dict[str, list[str]] = {}
  skipped: dict[str, str] = {}
  for name in run.config.eval.evaluators:
    start = time.perf_counter()
    try:
      result = REGISTRY[name].run(ctx)
    except NotApplicable as e:
      skipped[name] = str(e)
      continue
    # Wall time of each evaluator, the features it is first to need (cached in ctx) included.
    report[report_lib.EVAL_SECONDS + name] = time.perf_counter() - start
    report.update({k: float(v) for k, v in result.items()})
    section = REGISTRY[name].section
    sections.setdefault(section, []).extend(result)
    plots.setdefault(section, []).extend(
        png for png in REGISTRY[name].plots if os.path.exists(os.path.join(workdir, png)))
  if jax.process_index() == 0:
    report_lib.write(report, sections, skipped, run.config, workdir,
                     [s for s in SECTIONS if s in sections], plots)
  return report


__all__ = ["Context", "Evaluator", "NotApplicable", "REGISTRY", "SECTIONS", "config_defaults",
           "evaluate_run", "random_init_variables"]
