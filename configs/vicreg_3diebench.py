"""VICReg on 3DIEBench: SIE's invariant baseline (Garrido et al., ICML 2023, Table 1).

    python -m steerjax.main --config configs/vicreg_3diebench.py --config.data.root=/data/3DIEBench --workdir runs/vicreg_3diebench
    python -m steerjax.main --config configs/vicreg_3diebench.py:smoke --workdir /tmp/smoke  # CPU, ~1 min

Sources: "models" = facebookresearch/SIE src/models.py class VICReg; "main" = its main.py
defaults. The shared 3DIEBench protocol is `presets.iebench`.
"""

from steerjax import config as config_lib
from steerjax import presets


def get_config(arg=None):
  c = presets.iebench(config_lib.base_config())
  c.method = "vicreg"
  c.head.proj_layers, c.head.proj_hidden, c.head.proj_dim = 2, 2048, 2048  # main: --mlp 2048-2048-2048
  c.head.proj_output = "linear"  # models: Projector ends with nn.Linear(..., bias=False)
  c.loss.sim_coeff, c.loss.std_coeff, c.loss.cov_coeff = 10.0, 10.0, 1.0  # main: defaults 10/10/1
  return presets.finish(c, arg, "vicreg_3diebench")
