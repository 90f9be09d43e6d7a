"""SimCLR on CIFAR10: EquiMod's baseline, trained exactly like SimCLR + EquiMod minus the
equivariant term (Devillers & Lefort, ICLR 2023, Table 1: 90.96 top-1).

    python -m steerjax.main --config configs/simclr_cifar10.py --workdir runs/simclr_cifar10
    python -m steerjax.main --config configs/simclr_cifar10.py:smoke --workdir /tmp/smoke  # CPU, ~1 min

Sources: "run" = ADevillers/EquiMod run_equimod_simclr_cifar10.slurm (shared settings).
"""

from steerjax import config as config_lib
from steerjax import presets

CIFAR10_TRAIN = 50_000


def get_config(arg=None):
  c = config_lib.base_config()
  c.method = "simclr"
  presets.cifar10(c)
  c.augment.policy = "simclr_cifar"  # DESIGN.md §4
  c.head.proj_layers, c.head.proj_hidden, c.head.proj_dim = 2, 2048, 128  # run: --z_dim=128, h->2048->2048->128
  c.head.proj_output = "bn"  # last BN without affine
  c.loss.temperature = 0.5  # run: --temperature_z=0.5
  c.batch_size = 512  # run: --batch_size=512
  c.total_steps = presets.steps(800, CIFAR10_TRAIN, c.batch_size)  # run: --nb_epochs=800
  c.optim.name = "lars"
  c.optim.learning_rate = 4.0  # run: --lr_init=4.0
  c.optim.momentum = 0.9  # run: --momentum=0.9
  c.optim.weight_decay = 1e-6  # run: --weight_decay=1e-6
  c.optim.warmup_epochs = 10.0  # run: --nb_epochs_warmup=10
  c.optim.schedule = "cosine"
  c.eval.evaluators = ("linear_probe", "knn")
  c.eval.max_examples = 0
  c.eval.probe_epochs = 90  # run: --nb_epochs_clsf=90
  return presets.finish(c, arg, "simclr_cifar10")
