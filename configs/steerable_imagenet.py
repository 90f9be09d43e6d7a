"""Steerable SimCLR on ImageNet (Bhardwaj et al., 2023, arXiv 2302.11349).

    python -m steerjax.main --config configs/steerable_imagenet.py --workdir gs://BUCKET/steerable_imagenet
    python -m steerjax.main --config configs/steerable_imagenet.py:smoke --workdir /tmp/smoke  # CPU, ~1 min

The paper's recipe is not public (steerjax/design.md §5); we train like EquiMod's SimCLR on ImageNet
(run = ADevillers/EquiMod run_equimod_simclr_imagenet.slurm) and add the steering term with a
linear steerer on the 2048-d ResNet-50 representation.
"""

from steerjax import config as config_lib
from steerjax import presets


def get_config(arg=None):
  c = config_lib.base_config()
  c.method = "steerable"
  c.task = "simclr"
  presets.imagenet(c)
  c.augment.policy = "simclr_imagenet"
  c.steerer.name = "linear"
  c.head.proj_hidden, c.head.proj_dim = 2048, 128  # run: --z_dim=128
  c.loss.temperature = 0.2  # run: --temperature_z=0.2
  c.loss.steer_weight = 1.0  # λ; the paper's value is not public
  # run: --nb_epochs=800 --batch_size=4096 --lr_init=2.4 --weight_decay=1e-6
  presets.lars(c, epochs=800, num_train=presets.IMAGENET_TRAIN, batch_size=4096, learning_rate=2.4)
  c.eval.max_examples = 50_000
  c.eval.evaluators = ("linear_probe", "knn", "steering", "tta", "ood", "transfer")
  # Bhardwaj et al. report transfer probes, ImageNet-C robustness and OOD AUC; sets that are not
  # prepared in data.data_dir are skipped.
  c.eval.transfer_datasets = presets.TRANSFER_DATASETS
  c.eval.ood_datasets = ("imagenet2012_corrupted/gaussian_noise_3", "imagenet2012_corrupted/defocus_blur_3")
  c.eval.ood_split = "validation"
  return presets.finish(c, arg, "steerable_imagenet")
