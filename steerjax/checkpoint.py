"""Orbax checkpoints that restore onto whatever mesh the resumed run has.

Saves are asynchronous (the device-to-host copy happens before `save` returns,
so the donated train state may be reused at once) and only the last few are
kept. Restoring passes the *current* state's shapes and shardings as the
target, so a checkpoint written on 8 devices restores on 1 and vice versa.
"""

import os

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """A thin wrapper over `ocp.CheckpointManager` with the run's policy."""

  def __init__(self, directory: str, save_every: int, keep: int):
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, save_interval_steps=save_every, enable_async_checkpointing=True,
        create=True)
    self.manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def restore(self, state, step: int | None = None):
    """Returns `state` filled from the checkpoint at `step` (default: latest)."""
    step = self.latest_step() if step is None else step
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def save(self, step: int, state, force: bool = False) -> bool:
    """Saves if the interval says so (or `force`); returns whether it saved."""
    if force and step == self.latest_step():
      return False
    return self.manager.save(step, args=ocp.args.StandardSave(state), force=force)

  def reached_preemption(self, step: int) -> bool:
    """True on every host once any host got a preemption notice (multi-host safe)."""
    return self.manager.reached_preemption(step)

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
