"""BYOL + EquiMod on ImageNet (Devillers & Lefort, ICLR 2023), the paper's setting.

    python -m steerjax.main --config configs/equimod_byol_imagenet.py --workdir gs://BUCKET/equimod_byol_imagenet
    python -m steerjax.main --config configs/equimod_byol_imagenet.py:smoke --workdir /tmp/smoke  # CPU, ~1 min

Sources: "run" = ADevillers/EquiMod run_equimod_byol_imagenet.slurm, "model" = its
src/model.py. Reported top-1: 74.03 (BYOL) -> 73.22 (+EquiMod).
"""

from steerjax import config as config_lib
from steerjax import presets

IMAGENET_TRAIN = 1_281_167


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
  c.batch_size = 4096  # run: --batch_size=4096
  c.total_steps = presets.steps(1000, IMAGENET_TRAIN, c.batch_size)  # run: --nb_epochs=1000
  c.optim.name = "lars"
  c.optim.learning_rate = 4.8  # run: --lr_init=4.8
  c.optim.momentum = 0.9  # run: --momentum=0.9
  c.optim.weight_decay = 1.5e-6  # run: --weight_decay=1.5e-6
  c.optim.warmup_epochs = 10.0  # run: --nb_epochs_warmup=10
  c.optim.schedule = "cosine"
  c.eval.evaluators = ("linear_probe", "knn", "steering")
  c.eval.max_examples = 0
  c.eval.probe_epochs = 90  # run: --nb_epochs_clsf=90
  return presets.finish(c, arg, "equimod_byol_imagenet")
