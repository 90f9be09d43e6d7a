"""XLA:CPU settings that make the train step faster, applied before JAX starts.

jaxlib 0.10 sends convolutions *and* reductions to YNNPACK by default. Its reductions are
fast (BatchNorm statistics: 1.0 ms against Eigen's 9.3 ms for a 64×32×32×64 activation), but
its convolution weight gradients are slower than XLA's own Eigen convolutions (70 vs 47 ms
per 3×3 layer of 64 channels at 32 px, batch 64, one core). Keeping YNNPACK for reductions
only (`--xla_cpu_experimental_ynn_fusion_type=reduce`) makes the supervised ResNet-18 step
1.13× (width ×0.25) to 1.43× (width ×1) faster per core; `python -m steerjax.bench train
--vs-torch` measures it, and README's Benchmarks table records the figures.

The flag is experimental and an unknown flag aborts XLA, so it is set only for the jaxlib
minor version it was measured on, only when XLA_FLAGS does not already choose the YNNPACK
fusions, and never when STEERJAX_CPU_FLAGS=0. It affects only the CPU backend, and only
processes where JAX has not started a backend yet (import steerjax before running JAX code).
"""

import importlib.metadata
import os

FLAG = "--xla_cpu_experimental_ynn_fusion_type=reduce"
TESTED_JAXLIB = ("0.10",)


def apply() -> bool:
  """Adds FLAG to XLA_FLAGS where it is known to parse and wanted; -> whether it is set."""
  flags = os.environ.get("XLA_FLAGS", "")
  if FLAG in flags.split():
    return True
  if os.environ.get("STEERJAX_CPU_FLAGS") == "0" or "xla_cpu_experimental_ynn_fusion_type" in flags:
    return False
  try:
    version = importlib.metadata.version("jaxlib")
  except importlib.metadata.PackageNotFoundError:
    return False
  if not version.startswith(tuple(v + "." for v in TESTED_JAXLIB)):
    return False
  os.environ["XLA_FLAGS"] = f"{flags} {FLAG}".strip()
  return True
