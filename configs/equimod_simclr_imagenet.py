"""SimCLR + EquiMod on ImageNet (Devillers & Lefort, ICLR 2023), the paper's setting.

    python -m steerjax.main --config configs/equimod_simclr_imagenet.py --workdir gs://BUCKET/equimod_simclr_imagenet
    python -m steerjax.main --config configs/equimod_simclr_imagenet.py:smoke --workdir /tmp/smoke  # CPU, ~1 min

Sources: "run" = ADevillers/EquiMod run_equimod_simclr_imagenet.slurm. Reported top-1:
71.57 (SimCLR) -> 72.30 (+EquiMod). Needs a prepared `imagenet2012` tfds dataset.
"""

from steerjax import config as config_lib
from steerjax import presets


def get_config(arg=None):
  c = config_lib.base_config()
  c.method = "equimod_simclr"
  presets.imagenet(c)
  c.augment.policy = "simclr_imagenet"  # SimCLR's ImageNet augmentations (steerjax/design.md §4)
  c.head.proj_layers, c.head.proj_hidden, c.head.proj_dim = 2, 2048, 128  # run: --z_dim=128
  c.head.proj_output = "bn"
  c.head.equi_layers, c.head.equi_hidden, c.head.equi_dim = 2, 2048, 128  # run: --proj_head_eq_layers="2048-2048-", --y_dim=128
  c.loss.temperature = 0.2  # run: --temperature_z=0.2
  c.loss.equi_temperature = 0.2  # run: --temperature_y=0.2
  c.loss.equi_weight = 1.0  # run: --lmbd=1.0
  # run: --nb_epochs=800 --batch_size=4096 --lr_init=2.4 --weight_decay=1e-6
  presets.lars(c, epochs=800, num_train=presets.IMAGENET_TRAIN, batch_size=4096, learning_rate=2.4)
  c.eval.evaluators = ("linear_probe", "knn", "steering")
  return presets.finish(c, arg, "equimod_simclr_imagenet")
