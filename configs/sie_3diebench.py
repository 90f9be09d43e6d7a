"""SIE on 3DIEBench (Garrido, Najman, LeCun, ICML 2023), the paper's published command.

    python -m steerjax.main --config configs/sie_3diebench.py --config.data.root=/data/3DIEBench --workdir runs/sie_3diebench
    python -m steerjax.main --config configs/sie_3diebench.py:smoke --workdir /tmp/smoke  # CPU, ~1 min

Sources: "README" = facebookresearch/SIE README.md pretraining command
(--experience SIE --equi 256 --mlp 2048-2048-2048 --sim-coeff 10 --std-coeff 10
--cov-coeff 1 --equi-factor 0.45 --hypernetwork linear), "models" = its src/models.py.
The shared 3DIEBench protocol (data, batch, optimiser, epochs) is `presets.iebench`.
"""

from steerjax import config as config_lib
from steerjax import presets


def get_config(arg=None):
  c = presets.iebench(config_lib.base_config())
  c.method = "sie"
  # README --mlp 2048-2048-2048 scaled by each half's share (models: mlp_dims * ratio, --equi 256
  # of 512): each half's projector is 256 -> 1024 -> 1024 -> 1024.
  c.head.proj_layers, c.head.proj_hidden, c.head.proj_dim = 2, 1024, 1024
  c.head.proj_output = "linear"  # models: Projector ends with nn.Linear(..., bias=False)
  c.steerer.name = "hyper_linear"  # README: --hypernetwork linear (W(g) = reshape(H g), no bias)
  c.loss.sim_coeff = 10.0  # README: --sim-coeff 10
  c.loss.std_coeff = 10.0  # README: --std-coeff 10 (also weighs the prediction's variance term)
  c.loss.cov_coeff = 1.0  # README: --cov-coeff 1
  c.loss.equi_factor = 0.45  # README: --equi-factor 0.45 (weight 0.45 * 10 = 4.5)
  return presets.finish(c, arg, "sie_3diebench")
