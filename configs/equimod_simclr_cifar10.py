"""SimCLR + EquiMod on CIFAR10 (Devillers & Lefort, ICLR 2023), the paper's setting.

    python -m steerjax.main --config configs/equimod_simclr_cifar10.py --workdir runs/equimod_simclr_cifar10
    python -m steerjax.main --config configs/equimod_simclr_cifar10.py:smoke --workdir /tmp/smoke  # CPU, ~1 min

Sources: "run" = ADevillers/EquiMod run_equimod_simclr_cifar10.slurm, "model" = its
src/model.py, "paper" = arXiv 2211.01244 section 4. Reported top-1: 90.96 (SimCLR) ->
92.79 (+EquiMod), linear evaluation.
"""

from steerjax import config as config_lib
from steerjax import presets


def get_config(arg=None):
  c = config_lib.base_config()
  c.method = "equimod_simclr"
  presets.cifar10(c)
  c.augment.policy = "simclr_cifar"  # paper: SimCLR's CIFAR augmentations (steerjax/design.md §4)
  c.head.proj_layers, c.head.proj_hidden, c.head.proj_dim = 2, 2048, 128  # h->2048->2048->128, run: --z_dim=128
  c.head.proj_output = "bn"  # last BN without affine (steerjax/design.md §5)
  c.head.equi_layers, c.head.equi_hidden, c.head.equi_dim = 2, 2048, 128  # run: --proj_head_eq_layers="2048-2048-", --y_dim=128
  c.loss.temperature = 0.5  # run: --temperature_z=0.5
  c.loss.equi_temperature = 0.2  # run: --temperature_y=0.2
  c.loss.equi_weight = 1.0  # run: --lmbd=1.0
  # run: --nb_epochs=800 --batch_size=512 --lr_init=4.0 (not scaled by batch size) --weight_decay=1e-6;
  # their probe: SGD nesterov lr 0.2, batch 256
  presets.lars(c, epochs=800, num_train=presets.CIFAR10_TRAIN, batch_size=512, learning_rate=4.0)
  c.eval.evaluators = ("linear_probe", "knn", "steering")
  return presets.finish(c, arg, "equimod_simclr_cifar10")
