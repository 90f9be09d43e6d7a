"""SIE with rotation and colour (the paper's SIE-RotColor; official experience SIERotColor).

    python -m steerjax.main --config configs/sie_rotcolor_3diebench.py --config.data.root=/data/3DIEBench --workdir runs/sie_rotcolor_3diebench
    python -m steerjax.main --config configs/sie_rotcolor_3diebench.py:smoke --workdir /tmp/smoke  # CPU, ~1 min

The hypernetwork is conditioned on 6 numbers: the relative rotation quaternion and the floor-
and spot-hue differences (SIE src/dataset.py Dataset3DIEBenchRotColor: latent_2[[3, 6]] -
latent_1[[3, 6]]; src/models.py SIERotColor: ParametrizedNet(equi_emb_size, 6)). Everything else
is SIE's published command (`presets.sie`; the README gives no separate RotColor command).
At CPU scale this is the SIE variant that visibly learns its split: colour is learnt in a few
hundred steps, pose far more slowly (README, "SIE at CPU scale").
"""

from steerjax import config as config_lib
from steerjax import presets


def get_config(arg=None):
  c = presets.sie(config_lib.base_config())
  c.steerer.use_colour = True  # SIERotColor: g = (quaternion, floor-hue and spot-hue differences)
  return presets.finish(c, arg, "sie_rotcolor_3diebench")
