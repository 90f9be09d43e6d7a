"""Orbax checkpoints that restore onto whatever mesh the resumed run has.

Saves are asynchronous (the device-to-host copy happens before `save` returns,
so the donated train state may be reused at once) and only the last few are
kept. Restoring passes the *current* state's shapes and shardings as the
target, so a checkpoint written on 8 devices restores on 1 and vice versa.

Each finished checkpoint gets a manifest of its files' sizes and SHA-256, so a
truncated, deleted or garbled file is caught on restore (Orbax alone may read
garbled bytes back as numbers); a bad checkpoint is moved aside and the previous
one is used. A failed save raises CheckpointError and leaves earlier ones intact.
"""

import hashlib
import json
import os
import shutil

import jax
import orbax.checkpoint as ocp
from absl import logging

MANIFEST = "steerjax_manifest.json"


class CheckpointError(RuntimeError):
  """A checkpoint could not be saved, or none of the existing ones can be restored."""


def _files(step_dir: str) -> dict[str, tuple[int, str]]:
  out = {}
  for root, _, names in os.walk(step_dir):
    for name in names:
      path = os.path.join(root, name)
      rel = os.path.relpath(path, step_dir)
      if rel == MANIFEST:
        continue
      digest = hashlib.sha256()
      with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
          digest.update(chunk)
      out[rel] = (os.path.getsize(path), digest.hexdigest())
  return out


def verify(step_dir: str) -> str | None:
  """None if every file the manifest lists is there unchanged, else what is wrong."""
  path = os.path.join(step_dir, MANIFEST)
  if not os.path.exists(path):
    return None  # written before its manifest (killed mid-way): Orbax's own checks apply
  with open(path) as f:
    expected = {k: tuple(v) for k, v in json.load(f).items()}
  found = _files(step_dir)
  for rel, (size, digest) in expected.items():
    if rel not in found:
      return f"{rel} is missing"
    if found[rel][0] != size:
      return f"{rel} has {found[rel][0]} bytes, expected {size}"
    if found[rel][1] != digest:
      return f"{rel} is garbled (checksum mismatch)"
  return None


class CheckpointMismatchError(CheckpointError):
  """The checkpoint is intact but holds another model's arrays (its config changed)."""


class Checkpointer:
  """A thin wrapper over `ocp.CheckpointManager` with the run's policy."""

  def __init__(self, directory: str, save_every: int, keep: int):
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, save_interval_steps=save_every, enable_async_checkpointing=True,
        create=True)
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_handlers=ocp.StandardCheckpointHandler())
    self._unsealed = None  # the step whose save may still be in flight, manifest not yet written

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def _set_aside(self, step: int, bad_dir: str) -> str:
    """Moves checkpoint `step` into `bad_dir` (as STEP, or STEP.N if that is taken); returns where."""
    dest = os.path.join(bad_dir, str(step))
    n = 0
    while os.path.exists(dest):
      n += 1
      dest = os.path.join(bad_dir, f"{step}.{n}")
    if jax.process_index() == 0:
      os.makedirs(bad_dir, exist_ok=True)
      shutil.move(os.path.join(self.directory, str(step)), dest)
    return dest

  def set_aside_after(self, step: int, bad_dir: str) -> None:
    """Moves the checkpoints newer than `step` to `bad_dir`, so a run resumed from `step` (e.g. one
    from before a divergence) retrains those steps and its saves do not collide with them."""
    for newer in [s for s in self.steps() if s > step]:
      dest = self._set_aside(newer, bad_dir)
      print(f"resuming from step {step}: checkpoint {newer} moved to {dest}", flush=True)
    self.manager.reload()

  def restore(self, state, step: int | None = None):
    """Returns `state` filled from the checkpoint at `step` (default: latest)."""
    step = self.latest_step() if step is None else step
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def mismatch(self, state, step: int) -> str | None:
    """What differs between the checkpoint's arrays and `state`'s (another width, method or
    model wrote it), or None when every path and shape agrees or the metadata is unreadable."""
    try:
      saved = ocp.tree.to_flat_dict(self.manager.item_metadata(step).tree)
    except Exception:  # pylint: disable=broad-except  # unreadable metadata: a corrupt checkpoint
      return None
    wanted = ocp.tree.to_flat_dict(jax.tree.map(ocp.utils.to_shape_dtype_struct, state))
    name = lambda path: "/".join(map(str, path))
    for path, array in wanted.items():
      if path not in saved:
        return f"it has no {name(path)}"
      if tuple(saved[path].shape) != tuple(array.shape):
        return f"{name(path)} is {tuple(saved[path].shape)} there, {tuple(array.shape)} here"
    extra = [p for p in saved if p not in wanted]
    return f"it has {name(extra[0])}, which this model lacks" if extra else None

  def restore_latest_good(self, state, bad_dir: str):
    """(step, state) from the newest checkpoint that verifies and restores; (0, state) if none exist.

    A bad checkpoint is moved to `bad_dir` with a warning naming it, so training goes on from the
    previous one and later saves of that step do not collide with it. If checkpoints exist but
    none is good, raises CheckpointError rather than silently starting from scratch.
    """
    steps = sorted(self.manager.all_steps(), reverse=True)
    for step in steps:
      step_dir = os.path.join(self.directory, str(step))
      problem = verify(step_dir)
      mismatch = self.mismatch(state, step) if problem is None else None
      if mismatch:  # intact files written for another model: never move them aside
        raise CheckpointMismatchError(
            f"checkpoint {step_dir} was written for another model ({mismatch}); evaluate or "
            "resume it with the config it was trained with (the workdir's config_changes.jsonl "
            "lists the keys changed since), or use a new --workdir")
      if problem is None:
        try:
          return step, self.restore(state, step)
        except Exception as e:  # pylint: disable=broad-except  # any unreadable file
          problem = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
      dest = self._set_aside(step, bad_dir)
      logging.warning("checkpoint %s is bad (%s); moved to %s, falling back to the previous one",
                      step_dir, problem, dest)
      print(f"warning: checkpoint {step_dir} is bad ({problem}); moved to {dest}, "
            "falling back to the previous one", flush=True)
      self.manager.reload()
    if steps:
      raise CheckpointError(f"none of the checkpoints {steps} in {self.directory} can be restored "
                            f"(moved to {bad_dir}); rerun to start from scratch")
    return 0, state

  def _seal(self) -> None:
    """Waits for the in-flight save and writes its manifest (process 0; the files are final)."""
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except  # an async write failed
      self._fail(self._unsealed, e)
    step, self._unsealed = self._unsealed, None
    step_dir = os.path.join(self.directory, str(step))
    if step is not None and jax.process_index() == 0 and os.path.isdir(step_dir):
      try:
        manifest = _files(step_dir)
        with open(os.path.join(step_dir, MANIFEST), "w") as f:
          json.dump(manifest, f)
      except OSError as e:
        self._fail(step, e)

  def _fail(self, step, error):
    previous = [s for s in self.manager.all_steps() if s != step]
    kept = f"step {max(previous)} is intact" if previous else "no earlier checkpoint exists"
    raise CheckpointError(f"saving checkpoint step {step} in {self.directory} failed "
                          f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                          f"{kept}; free space or fix permissions, then rerun to resume") from None

  def save(self, step: int, state, force: bool = False) -> bool:
    """Saves if the interval says so (or `force`); returns whether it saved."""
    if force and step == self.latest_step():
      return False
    if not (force or self.manager.should_save(step)):
      return False
    self._seal()
    try:
      saved = self.manager.save(step, args=ocp.args.StandardSave(state), force=force)
    except Exception as e:  # pylint: disable=broad-except  # the synchronous part failed
      self._fail(step, e)
    self._unsealed = step if saved else None
    return saved

  def reached_preemption(self, step: int) -> bool:
    """True on every host once any host got a preemption notice (multi-host safe)."""
    return self.manager.reached_preemption(step)

  def close(self) -> None:
    self._seal()
    self.manager.close()
