"""SimCLR on 3DIEBench: SIE's contrastive baseline (Garrido et al., ICML 2023, Table 1).

    python -m steerjax.main --config configs/simclr_3diebench.py --config.data.root=/data/3DIEBench --workdir runs/simclr_3diebench
    python -m steerjax.main --config configs/simclr_3diebench.py:smoke --workdir /tmp/smoke  # CPU, ~1 min

Sources: "models" = facebookresearch/SIE src/models.py class SimCLR; "main" = its main.py.
The shared 3DIEBench protocol is `presets.iebench`.
"""

from steerjax import config as config_lib
from steerjax import presets


def get_config(arg=None):
  c = presets.iebench(config_lib.base_config())
  c.method = "simclr"
  c.head.proj_layers, c.head.proj_hidden, c.head.proj_dim = 2, 2048, 2048  # main: --mlp 2048-2048-2048
  c.head.proj_output = "linear"  # models: Projector ends with nn.Linear(..., bias=False)
  c.loss.temperature = 0.1  # main: --simclr-temp 0.1
  return presets.finish(c, arg, "simclr_3diebench")
