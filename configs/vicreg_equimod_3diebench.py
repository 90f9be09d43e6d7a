"""VICReg + EquiMod on 3DIEBench (view 1 -> view 2): SIE's VICReg-based EquiMod baseline
(Garrido et al., ICML 2023, Table 1).

    python -m steerjax.main --config configs/vicreg_equimod_3diebench.py --config.data.root=/data/3DIEBench --workdir runs/vicreg_equimod_3diebench
    python -m steerjax.main --config configs/vicreg_equimod_3diebench.py:smoke --workdir /tmp/smoke  # CPU, ~1 min

Sources: "models" = facebookresearch/SIE src/models.py class VICRegEquiMod (invariant and
equivariant projectors on the whole representation, hypernetwork predictor from view 1's
equivariant projection to view 2's, VICReg terms on each part); "main" = its main.py. The shared
3DIEBench protocol is `presets.iebench`.
"""

from steerjax import config as config_lib
from steerjax import presets


def get_config(arg=None):
  c = presets.iebench(config_lib.base_config())
  c.method = "vicreg_equimod"
  c.head.proj_layers, c.head.proj_hidden, c.head.proj_dim = 2, 2048, 2048  # main: --mlp 2048-2048-2048, both projectors
  c.head.proj_output = "linear"  # models: Projector ends with nn.Linear(..., bias=False)
  c.steerer.name = "hyper_linear"  # main: --predictor-type hypernetwork, --hypernetwork linear
  c.loss.sim_coeff, c.loss.std_coeff, c.loss.cov_coeff = 10.0, 10.0, 1.0  # main: 10/10/1
  c.loss.equi_factor = 0.45  # models: loss = loss_inv + equi_factor * loss_equi; 0.45 as SIE's published command (assumption: this baseline's command is not published)
  return presets.finish(c, arg, "vicreg_equimod_3diebench")
