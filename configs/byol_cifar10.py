"""BYOL on CIFAR10: EquiMod's baseline, trained exactly like BYOL + EquiMod minus the
equivariant term (Devillers & Lefort, ICLR 2023, Table 1: 90.44 top-1).

    python -m steerjax.main --config configs/byol_cifar10.py --workdir runs/byol_cifar10
    python -m steerjax.main --config configs/byol_cifar10.py:smoke --workdir /tmp/smoke  # CPU, ~1 min

Sources: "run" = ADevillers/EquiMod run_equimod_byol_cifar10.slurm, "model" = its src/model.py.
"""

from steerjax import config as config_lib
from steerjax import presets

CIFAR10_TRAIN = 50_000


def get_config(arg=None):
  c = config_lib.base_config()
  c.method = "byol"
  presets.cifar10(c)
  c.augment.policy, c.augment.policy2 = "byol_view1", "byol_view2"  # BYOL's asymmetric pair
  c.head.proj_layers, c.head.proj_hidden, c.head.proj_dim = 1, 4096, 256  # model: h->4096->256, run: --z_dim=256
  c.head.proj_output = "linear_bias"  # BYOL: the MLP ends with a Linear with bias
  c.head.pred_hidden = 4096  # model: predictor 256->4096->256
  c.loss.ema_base = 0.996  # run: --tau_base=0.996, cosine to 1
  c.batch_size = 512  # run: --batch_size=512
  c.total_steps = presets.steps(800, CIFAR10_TRAIN, c.batch_size)  # run: --nb_epochs=800
  c.optim.name = "lars"
  c.optim.learning_rate = 2.0  # run: --lr_init=2.0
  c.optim.momentum = 0.9  # run: --momentum=0.9
  c.optim.weight_decay = 1e-6  # run: --weight_decay=1e-6
  c.optim.warmup_epochs = 10.0  # run: --nb_epochs_warmup=10
  c.optim.schedule = "cosine"
  c.eval.evaluators = ("linear_probe", "knn")
  c.eval.max_examples = 0
  c.eval.probe_epochs = 90  # run: --nb_epochs_clsf=90
  return presets.finish(c, arg, "byol_cifar10")
