"""SIE on 3DIEBench (Garrido, Najman, LeCun, ICML 2023), the paper's published command.

    python -m steerjax.main --config configs/sie_3diebench.py --config.data.root=/data/3DIEBench --workdir runs/sie_3diebench
    python -m steerjax.main --config configs/sie_3diebench.py:smoke --workdir /tmp/smoke  # CPU, ~1 min

g is the relative rotation only (4 numbers). Every hyper-parameter and its source in the
official code is in `presets.sie`; the shared 3DIEBench protocol (data, batch, optimiser,
epochs) in `presets.iebench`.
"""

from steerjax import config as config_lib
from steerjax import presets


def get_config(arg=None):
  return presets.finish(presets.sie(config_lib.base_config()), arg, "sie_3diebench")
