"""SimCLR on CIFAR10: EquiMod's baseline, trained exactly like SimCLR + EquiMod minus the
equivariant term (Devillers & Lefort, ICLR 2023, Table 1: 90.96 top-1).

    python -m steerjax.main --config configs/simclr_cifar10.py --workdir runs/simclr_cifar10
    python -m steerjax.main --config configs/simclr_cifar10.py:smoke --workdir /tmp/smoke  # CPU, ~1 min

Sources: "run" = ADevillers/EquiMod run_equimod_simclr_cifar10.slurm (shared settings).
"""

from steerjax import config as config_lib
from steerjax import presets


def get_config(arg=None):
  c = config_lib.base_config()
  c.method = "simclr"
  presets.cifar10(c)
  c.augment.policy = "simclr_cifar"  # steerjax/design.md §4
  c.head.proj_layers, c.head.proj_hidden, c.head.proj_dim = 2, 2048, 128  # run: --z_dim=128, h->2048->2048->128
  c.head.proj_output = "bn"  # last BN without affine
  c.loss.temperature = 0.5  # run: --temperature_z=0.5
  # run: --nb_epochs=800 --batch_size=512 --lr_init=4.0 --weight_decay=1e-6
  presets.lars(c, epochs=800, num_train=presets.CIFAR10_TRAIN, batch_size=512, learning_rate=4.0)
  c.eval.evaluators = ("linear_probe", "knn")
  return presets.finish(c, arg, "simclr_cifar10")
