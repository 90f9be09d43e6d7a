"""BYOL + EquiMod on ImageNet (Devillers & Lefort, ICLR 2023), the paper's setting.

    python -m steerjax.main --config configs/equimod_byol_imagenet.py --workdir gs://BUCKET/equimod_byol_imagenet
    python -m steerjax.main --config configs/equimod_byol_imagenet.py:smoke --workdir /tmp/smoke  # CPU, ~1 min

Sources: "run" = ADevillers/EquiMod run_equimod_byol_imagenet.slurm, "model" = its
src/model.py. Reported top-1: 74.03 (BYOL) -> 73.22 (+EquiMod).
"""

from steerjax import config as config_lib
from steerjax import presets


def get_config(arg=None):
  c = config_lib.base_config()
  c.method = "equimod_byol"
  presets.imagenet(c)
  c.augment.policy, c.augment.policy2 = "byol_view1", "byol_view2"  # BYOL's asymmetric pair
  c.head.proj_layers, c.head.proj_hidden, c.head.proj_dim = 1, 4096, 256  # model: h->4096->256, run: --z_dim=256
  c.head.proj_output = "linear_bias"  # BYOL: the MLP ends with a Linear with bias
  c.head.pred_hidden = 4096  # model: predictor_inv 256->4096->256
  c.head.equi_layers, c.head.equi_hidden, c.head.equi_dim = 2, 2048, 128  # model: proj_head_eq, run: --y_dim=128
  c.loss.equi_temperature = 0.2  # run: --temperature_y=0.2
  c.loss.equi_weight = 1.0  # run: --lmbd=1.0
  c.loss.ema_base = 0.996  # run: --tau_base=0.996
  # run: --nb_epochs=1000 --batch_size=4096 --lr_init=4.8 --weight_decay=1.5e-6
  presets.lars(c, epochs=1000, num_train=presets.IMAGENET_TRAIN, batch_size=4096, learning_rate=4.8, weight_decay=1.5e-6)
  c.eval.evaluators = ("linear_probe", "knn", "steering")
  return presets.finish(c, arg, "equimod_byol_imagenet")
