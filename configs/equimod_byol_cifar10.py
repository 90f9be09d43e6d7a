"""BYOL + EquiMod on CIFAR10 (Devillers & Lefort, ICLR 2023), the paper's setting.

    python -m steerjax.main --config configs/equimod_byol_cifar10.py --workdir runs/equimod_byol_cifar10
    python -m steerjax.main --config configs/equimod_byol_cifar10.py:smoke --workdir /tmp/smoke  # CPU, ~1 min

Sources: "run" = ADevillers/EquiMod run_equimod_byol_cifar10.slurm, "model" = its
src/model.py. Reported top-1: 90.44 (BYOL) -> 91.57 (+EquiMod).
"""

from steerjax import config as config_lib
from steerjax import presets


def get_config(arg=None):
  c = config_lib.base_config()
  c.method = "equimod_byol"
  presets.cifar10(c)
  c.augment.policy, c.augment.policy2 = "byol_view1", "byol_view2"  # BYOL's asymmetric pair (steerjax/design.md §4)
  c.head.proj_layers, c.head.proj_hidden, c.head.proj_dim = 1, 4096, 256  # model: proj_head_inv h->4096->256, run: --z_dim=256
  c.head.proj_output = "linear_bias"  # model: the MLP ends with a Linear with bias
  c.head.pred_hidden = 4096  # model: predictor_inv 256->4096->256
  c.head.equi_layers, c.head.equi_hidden, c.head.equi_dim = 2, 2048, 128  # model: proj_head_eq, run: --y_dim=128
  c.loss.equi_temperature = 0.2  # run: --temperature_y=0.2
  c.loss.equi_weight = 1.0  # run: --lmbd=1.0
  c.loss.ema_base = 0.996  # run: --tau_base=0.996, cosine to 1 (model: MomentumResNet.update)
  # run: --nb_epochs=800 --batch_size=512 --lr_init=2.0 --weight_decay=1e-6
  presets.lars(c, epochs=800, num_train=presets.CIFAR10_TRAIN, batch_size=512, learning_rate=2.0)
  c.eval.evaluators = ("linear_probe", "knn", "steering")
  return presets.finish(c, arg, "equimod_byol_cifar10")
