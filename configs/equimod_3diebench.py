"""EquiMod on 3DIEBench (view 1 -> view 2): SIE's baseline (Garrido et al., ICML 2023, Table 1).

    python -m steerjax.main --config configs/equimod_3diebench.py --config.data.root=/data/3DIEBench --workdir runs/equimod_3diebench
    python -m steerjax.main --config configs/equimod_3diebench.py:smoke --workdir /tmp/smoke  # CPU, ~1 min

Sources: "models" = facebookresearch/SIE src/models.py class SimCLREquiMod (invariant and
equivariant projectors on the whole representation, hypernetwork predictor from view 1's
equivariant projection to view 2's, both terms NT-Xent with --simclr-temp); "main" = its
main.py. The shared 3DIEBench protocol is `presets.iebench`.
"""

from steerjax import config as config_lib
from steerjax import presets


def get_config(arg=None):
  c = presets.iebench(config_lib.base_config())
  c.method = "equimod_pairs"
  c.head.proj_layers, c.head.proj_hidden, c.head.proj_dim = 2, 2048, 2048  # main: --mlp 2048-2048-2048, both projectors
  c.head.proj_output = "linear"  # models: Projector ends with nn.Linear(..., bias=False)
  c.steerer.name = "hyper_linear"  # main: --predictor-type hypernetwork, --hypernetwork linear
  c.loss.temperature = 0.1  # main: --simclr-temp 0.1 (invariant term)
  c.loss.equi_temperature = 0.1  # models: the equivariant NT-Xent uses the same --simclr-temp
  c.loss.equi_weight = 1.0  # models: loss = equi_factor * loss_equi + loss_inv; λ = 1 as EquiMod (assumption: SIE's command for this baseline is not published)
  return presets.finish(c, arg, "equimod_3diebench")
