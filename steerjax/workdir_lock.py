"""One run per workdir: an advisory `flock` on `WORKDIR/run.<process>.lock`.

The kernel drops the lock when its process dies, however it dies, so a SIGKILLed run never
leaves a stuck lock: its file stays behind only as a note of who held it last. One lock per
process index lets the processes of one multi-process run share a workdir while a second
run's process i still collides with the first run's process i.
"""

import fcntl
import json
import os
import socket
import time


class LockedError(RuntimeError):
  """Another live run holds the workdir; the message names it."""


def acquire(workdir: str, process_index: int = 0):
  """Returns the open lock file (keep it open for the run's lifetime) or raises LockedError."""
  path = os.path.join(workdir, f"run.{process_index}.lock")
  f = open(path, "a+")  # pylint: disable=consider-using-with
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    f.seek(0)
    holder = f.read().strip() or "{}"
    f.close()
    try:
      info = json.loads(holder)
    except ValueError:
      info = {}
    raise LockedError(
        f"{workdir} is in use by another run (pid {info.get('pid', '?')} on host "
        f"{info.get('host', '?')}, started {info.get('started', '?')}); wait for it to end or "
        "use another --workdir") from None
  f.seek(0)
  f.truncate()
  f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                      "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
  f.flush()
  return f
