"""Steerable SimCLR on CIFAR10 (Bhardwaj et al., 2023, arXiv 2302.11349).

    python -m steerjax.main --config configs/steerable_cifar10.py --workdir runs/steerable_cifar10
    python -m steerjax.main --config configs/steerable_cifar10.py:smoke --workdir /tmp/smoke  # CPU, ~1 min

The paper's training recipe and steerer parameterisation are not public (steerjax/design.md §5). We
train like EquiMod's SimCLR on CIFAR10 (run = ADevillers/EquiMod
run_equimod_simclr_cifar10.slurm) so the rows compare on equal terms, and add the steering
term λ·‖f(g·x) − ρ(g) f(x)‖² / ‖f(g·x)‖² with a linear steerer ρ(g) = I + Σ_k g_k A_k on the
512-d representation, g the standardised augmentation parameters (steerjax/design.md §4).
"""

from steerjax import config as config_lib
from steerjax import presets


def get_config(arg=None):
  c = config_lib.base_config()
  c.method = "steerable"
  c.task = "simclr"
  presets.cifar10(c)
  c.augment.policy = "simclr_cifar"
  c.steerer.name = "linear"  # steerjax/design.md §5: linear in g, ρ = I at init
  c.head.proj_hidden, c.head.proj_dim = 2048, 128  # SimCLR projector width (run: --z_dim=128)
  c.loss.temperature = 0.5  # run: --temperature_z=0.5
  c.loss.steer_weight = 1.0  # λ; the paper's value is not public
  # run: --nb_epochs=800 --batch_size=512 --lr_init=4.0 --weight_decay=1e-6
  presets.lars(c, epochs=800, num_train=presets.CIFAR10_TRAIN, batch_size=512, learning_rate=4.0)
  c.eval.evaluators = ("linear_probe", "knn", "steering", "tta", "ood", "transfer")
  # Bhardwaj et al. report transfer probes, ImageNet-C robustness and OOD AUC; sets that are not
  # prepared in data.data_dir are skipped.
  c.eval.transfer_datasets = presets.TRANSFER_DATASETS
  c.eval.ood_datasets = ("cifar10_corrupted/gaussian_noise_3", "cifar10_corrupted/defocus_blur_3")
  c.eval.ood_split = "test"
  return presets.finish(c, arg, "steerable_cifar10")
