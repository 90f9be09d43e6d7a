"""Side-by-side timing shared by the benchmarks."""

import time

import numpy as np


def alternating_medians(contenders: dict, repeats: int, warmup: int = 0) -> dict[str, tuple[float, float]]:
  """Runs each contender once per round, in turn; -> {name: (median wall s, median CPU s)}.

  Alternating makes a shared machine slow both sides alike. CPU seconds (all threads of this
  process) are what other jobs cannot inflate; wall time favours whichever side the other jobs
  leave alone. The first `warmup` rounds are not counted.
  """
  times = {name: [] for name in contenders}
  for i in range(warmup + repeats):
    for name, fn in contenders.items():
      wall, cpu = time.perf_counter(), time.process_time()
      fn()
      if i >= warmup:
        times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
  return {name: tuple(float(v) for v in np.median(np.array(t), axis=0)) for name, t in times.items()}
