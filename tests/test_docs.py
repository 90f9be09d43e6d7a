"""The repository documents itself: every design reference resolves inside it."""

import importlib
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DESIGN = os.path.join(ROOT, "steerjax", "design.md")


def tracked_text_files():
  out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
  for path in out.stdout.split():
    if path.endswith((".py", ".md", ".ipynb", ".toml", ".sh")) or path.startswith(".ci/"):
      yield path


def design_sections():
  with open(DESIGN, encoding="utf-8") as f:
    return {int(m) for m in re.findall(r"^## (\d+)\. ", f.read(), re.M)}


def test_design_references_name_existing_sections():
  if not os.path.isdir(os.path.join(ROOT, ".git")):
    pytest.skip("needs the git checkout to list the repository's files")
  sections, refs = design_sections(), 0
  assert sections == set(range(1, len(sections) + 1)), "sections are numbered 1..N"
  for path in tracked_text_files():
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
      text = f.read()
    if path != "tests/test_docs.py":
      assert "DESIGN.md" not in text and "../shared" not in text, (
          f"{path} points at a file outside the repository")
    for group in re.findall(r"design\.md((?:\s*(?:§\d+|and|,))+)", text):
      for number in re.findall(r"§(\d+)", group):
        refs += 1
        assert int(number) in sections, f"{path} cites design.md §{number}, which does not exist"
  assert refs >= 10  # the docstrings and configs do cite it


def test_design_names_modules_that_exist():
  with open(DESIGN, encoding="utf-8") as f:
    text = f.read()
  files = set(re.findall(r"`((?:methods|metrics|data|models)/\w+\.py)`", text))
  files |= {f"{m}.py" for m in re.findall(r"`(steerers|tta)`", text)}
  assert len(files) >= 6
  for name in sorted(files):
    assert os.path.exists(os.path.join(ROOT, "steerjax", name)), name
  names = set(re.findall(r"`(steerjax(?:\.\w+)+)", text))
  assert "steerjax.data.synthetic3d.generate" in names
  for name in sorted(names):
    assert _resolve(name) is not None, f"design.md names {name}, which does not exist"


def _resolve(name):
  """The module or attribute a dotted name denotes (None when it denotes nothing)."""
  parts = name.split(".")
  for cut in range(len(parts), 0, -1):
    try:
      obj = importlib.import_module(".".join(parts[:cut]))
    except ImportError:
      continue
    for attr in parts[cut:]:
      obj = getattr(obj, attr, None)
    return obj
  return None


def test_design_page_ships_with_the_package():
  import steerjax
  assert os.path.exists(os.path.join(os.path.dirname(steerjax.__file__), "design.md"))
