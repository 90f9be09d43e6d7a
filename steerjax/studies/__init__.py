"""The studies `python -m steerjax.study NAME` runs, one module per paper."""

import importlib

from steerjax.studies.base import Comparison, Member, Study

NAMES = ("sie", "steerable", "learned_equivariance", "equimod")


def get_study(name: str) -> Study:
  if name not in NAMES:
    raise KeyError(name)
  return importlib.import_module(f"steerjax.studies.{name}").STUDY
