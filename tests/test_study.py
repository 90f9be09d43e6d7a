"""The study runner: members as workdirs, resume, failures in the table, claims judged.

The CI-speed test drives the runner with trivially small members (a Python one-liner that
writes a report.json, or fails); the slow tests run every real study at `--scale tiny`.
"""

import dataclasses
import json
import os
import sys

import pytest

from steerjax import study as study_lib
from steerjax import studies
from steerjax.studies import base


@dataclasses.dataclass(frozen=True)
class FakeMember(base.Member):
  """Writes report.json {"acc": value} (value from the seed), or raises when value < 0."""
  value: float = 0.0

  def argv(self, workdir, extra=()):
    code = (f"import json, os\nif {self.value} < 0: raise ValueError('boom {self.setting}')\n"
            f"json.dump({{'acc': {self.value}, 'extra': {len(extra)}}}, "
            f"open(os.path.join({workdir!r}, 'report.json'), 'w'))")
    return [sys.executable, "-c", code]


def fake_study():
  return base.Study(
      name="fake", title="fake", members=lambda scale, seeds: [], columns=("acc",),
      comparisons=(base.Comparison("A above B", "acc", "A", "B"),
                   base.Comparison("A above C", "acc", "A", "C"),
                   base.Comparison("B about 0.5", "acc", "B", "B", "~", constant=0.5,
                                   tolerance=0.05)))


MEMBERS = [FakeMember("A", "", seed=0, value=0.9), FakeMember("A", "", seed=1, value=0.7),
           FakeMember("B", "", seed=0, value=0.55), FakeMember("B", "", seed=1, value=0.45),
           FakeMember("C", "", seed=0, value=-1.0)]


def test_runner_table_claims_failures_and_resume(tmp_path):
  results = study_lib.run_study(fake_study(), str(tmp_path), "cpu", 2, ["k=v"], MEMBERS)
  assert [r["status"] for r in results] == ["done"] * 4 + ["failed"]
  assert results[-1]["error"] == "ValueError: boom C"
  assert base.Member("SIE + x0.25 no-aug", "", seed=2).name == "SIE_x0.25_no_aug-seed2"
  assert results[0]["metrics"]["extra"] == 1  # --config.* overrides reach every member
  data = json.loads((tmp_path / "study.json").read_text())
  assert data["rows"]["A"]["acc"] == pytest.approx({"mean": 0.8, "spread": 0.1414213, "n": 2})
  verdicts = [c["verdict"] for c in data["comparisons"]]
  assert verdicts == ["holds", "n/a (not measured)", "holds"]
  md = (tmp_path / "study.md").read_text()
  assert "| A | 2/2 | 0.800 ± 0.141 |" in md
  assert "| C | 0/1 (failed) | n/a |" in md
  assert "`C-seed0`: ValueError: boom C" in md
  assert (tmp_path / "study.png").stat().st_size > 0
  # Rerun: finished members are read back, the failed one is tried again.
  (tmp_path / "A-seed0" / "report.json").write_text(json.dumps({"acc": 0.1}))
  again = study_lib.run_study(fake_study(), str(tmp_path), "cpu", 2, [], MEMBERS)
  assert [r["reused"] for r in again] == [True] * 4 + [False]
  assert again[0]["metrics"]["acc"] == 0.1  # not recomputed
  verdicts = [c["verdict"] for c in json.loads((tmp_path / "study.json").read_text())["comparisons"]]
  assert verdicts[0] == "within seed spread"  # A = 0.4 ± 0.42 vs B = 0.5 ± 0.07


def test_first_error_line():
  log = "step 1\nTraceback (most recent call last):\n  File x\nKeyError: 'image'\n"
  assert study_lib.first_error_line(log, 1) == "KeyError: 'image'"
  assert study_lib.first_error_line("error: config.x is bad\n", 2) == "error: config.x is bad"
  assert study_lib.first_error_line("", 9) == "exit status 9"


def test_unknown_study_and_bad_flags(capsys):
  assert study_lib.main(["nope", "--workdir", "/tmp/unused"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err == ["error: unknown study 'nope'; known studies: sie, steerable, "
                 "learned_equivariance, equimod"]
  assert study_lib.main(["sie", "--workdir", "/tmp/unused", "--bogus"]) == 2


@pytest.mark.parametrize("name", studies.NAMES)
def test_every_study_builds_members_at_every_scale(name):
  study = studies.get_study(name)
  for scale in base.SCALES:
    members = study.members(scale, 2)
    assert len({m.name for m in members}) == len(members) >= 4
    settings = {m.setting for m in members}
    for c in study.comparisons:  # every claim names settings the study runs
      assert c.a in settings and (c.constant is not None or c.b in settings), c
    for m in members:
      assert os.path.exists(os.path.join(base.ROOT, m.config.partition(":")[0]))


@pytest.mark.slow
@pytest.mark.parametrize("name", studies.NAMES)
def test_study_pipeline_at_tiny_scale(name, tmp_path):
  study = studies.get_study(name)
  results = study_lib.run_study(study, str(tmp_path), "tiny", 1, [])
  assert all(r["status"] == "done" for r in results), [r.get("error") for r in results]
  md = (tmp_path / "study.md").read_text()
  assert all(f"| {r['setting']} | 1/1 |" in md for r in results)
  again = study_lib.run_study(study, str(tmp_path), "tiny", 1, [])
  assert all(r["reused"] for r in again)


def test_one_seed_verdicts_say_there_is_no_spread():
  rows = {"A": {"acc": {"mean": 0.30, "spread": 0.0, "n": 1}},
          "B": {"acc": {"mean": 0.29, "spread": 0.0, "n": 1}}}
  verdict = base.Comparison("A above B", "acc", "A", "B").judge(rows)["verdict"]
  assert verdict == "holds (one seed: no spread to judge the gap by)"
  assert base.Comparison("A below 1", "acc", "A", "A", "<", constant=1.0).judge(rows)["verdict"] == "holds"
