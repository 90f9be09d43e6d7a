"""BYOL on CIFAR10: EquiMod's baseline, trained exactly like BYOL + EquiMod minus the
equivariant term (Devillers & Lefort, ICLR 2023, Table 1: 90.44 top-1).

    python -m steerjax.main --config configs/byol_cifar10.py --workdir runs/byol_cifar10
    python -m steerjax.main --config configs/byol_cifar10.py:smoke --workdir /tmp/smoke  # CPU, ~1 min

Sources: "run" = ADevillers/EquiMod run_equimod_byol_cifar10.slurm, "model" = its src/model.py.
"""

from steerjax import config as config_lib
from steerjax import presets


def get_config(arg=None):
  c = config_lib.base_config()
  c.method = "byol"
  presets.cifar10(c)
  c.augment.policy, c.augment.policy2 = "byol_view1", "byol_view2"  # BYOL's asymmetric pair
  c.head.proj_layers, c.head.proj_hidden, c.head.proj_dim = 1, 4096, 256  # model: h->4096->256, run: --z_dim=256
  c.head.proj_output = "linear_bias"  # BYOL: the MLP ends with a Linear with bias
  c.head.pred_hidden = 4096  # model: predictor 256->4096->256
  c.loss.ema_base = 0.996  # run: --tau_base=0.996, cosine to 1
  # run: --nb_epochs=800 --batch_size=512 --lr_init=2.0 --weight_decay=1e-6
  presets.lars(c, epochs=800, num_train=presets.CIFAR10_TRAIN, batch_size=512, learning_rate=2.0)
  c.eval.evaluators = ("linear_probe", "knn")
  return presets.finish(c, arg, "byol_cifar10")
