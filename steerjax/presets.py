"""Shared config presets: the CPU smoke setting and paper-schedule arithmetic.

Every paper config in configs/ accepts the argument `smoke`
(`--config configs/NAME.py:smoke`) and passes itself through `smoke` so that the
same method, loss and optimiser run end to end on synthetic3d in about a minute on
a 2-core CPU. Only sizes change, never the method.
"""

import ml_collections

from steerjax import config as config_lib


# The transfer sets of Bhardwaj et al. (and most SSL papers); skipped when not prepared.
TRANSFER_DATASETS = ("oxford_flowers102", "caltech_birds2011", "dtd", "oxford_iiit_pet",
                     "food101", "cars196", "stl10")


def steps(epochs: int, num_train: int, batch_size: int) -> int:
  """Optimiser steps of a paper schedule: epochs × full batches per epoch (drop_last)."""
  return epochs * (num_train // batch_size)


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks `c` to a one-minute CPU run on synthetic3d; keeps method, losses and optimiser."""
  c.data.name = "synthetic3d"
  c.data.image_size = 32
  c.data.num_objects = 300
  c.data.views_per_object = 10
  c.model.name = "resnet18"
  c.model.width_multiplier = 0.25
  c.model.cifar_stem = True
  c.model.dtype = "float32"
  c.head.proj_hidden = 256
  c.head.proj_dim = min(c.head.proj_dim, 128)
  c.head.pred_hidden = 256
  c.head.equi_hidden = 256
  c.head.equi_dim = min(c.head.equi_dim, 128)
  c.head.augself_hidden = 256
  c.steerer.hidden = 64
  c.batch_size = 64
  c.total_steps = 40
  c.optim.warmup_epochs = 0.0
  c.log_every = 10
  c.checkpoint_every = 40
  c.eval.batch_size = 256
  c.eval.max_examples = 600
  c.eval.probe_epochs = 20
  c.eval.transfer_datasets, c.eval.ood_datasets = (), ()  # smoke runs read no tfds data
  return c


def finish(c: ml_collections.ConfigDict, arg: str | None, name: str) -> ml_collections.ConfigDict:
  """Applies the config argument: None (the paper setting) or "smoke"."""
  if arg == "smoke":
    return smoke(c)
  if arg:
    raise config_lib.ConfigError(f"configs/{name}.py takes no argument or 'smoke', not {arg!r}")
  return c


def cifar10(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """CIFAR-10 from tfds with the papers' backbone: a full-width ResNet-18 with the CIFAR stem
  (3x3 stride-1 conv1, no max-pool; EquiMod run_*_cifar10.slurm --resnet_type=resnet18)."""
  c.data.name = "cifar10"
  c.data.image_size = 32
  c.data.train_split, c.data.val_split = "train", "test"
  c.model.name = "resnet18"
  c.model.width_multiplier = 1.0
  c.model.cifar_stem = True
  return c


def imagenet(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """ImageNet from tfds at 224 with the papers' backbone: ResNet-50, ImageNet stem, bf16 compute
  (EquiMod run_*_imagenet.slurm --resnet_type=resnet50 --precision=mixed)."""
  c.data.name = "imagenet2012"
  c.data.image_size = 224
  c.data.train_split, c.data.val_split = "train", "validation"
  c.model.name = "resnet50"
  c.model.width_multiplier = 1.0
  c.model.cifar_stem = False
  c.model.dtype = "bfloat16"
  return c


# Training-set sizes (tfds train splits) for `steps`.
CIFAR10_TRAIN = 50_000
IMAGENET_TRAIN = 1_281_167


def lars(c: ml_collections.ConfigDict, epochs: int, num_train: int, batch_size: int,
         learning_rate: float, weight_decay: float = 1e-6) -> ml_collections.ConfigDict:
  """The EquiMod code's training protocol (main.py LARSW; run_*.slurm), which the SimCLR, BYOL
  and steerable baselines share: LARS with momentum 0.9 (--momentum=0.9), 10 warm-up epochs then
  cosine (--nb_epochs_warmup=10), and EquiMod's linear probe (--nb_epochs_clsf=90: 90 epochs,
  SGD-Nesterov, lr 0.2, cosine, batch 256) on the whole evaluation split. The per-run values are each config's to state with their source."""
  c.batch_size = batch_size
  c.total_steps = steps(epochs, num_train, batch_size)
  c.optim.name = "lars"
  c.optim.learning_rate = learning_rate
  c.optim.momentum = 0.9
  c.optim.weight_decay = weight_decay
  c.optim.warmup_epochs = 10.0
  c.optim.schedule = "cosine"
  c.eval.max_examples = 0
  c.eval.probe_protocol = "equimod"
  return c


IEBENCH_TRAIN_OBJECTS = 41_920  # steerjax/design.md §6; SIE's loader draws one pair per object per epoch


def iebench(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """SIE's common protocol for every method on 3DIEBench (facebookresearch/SIE main.py, README).

  Two distinct rendered views of one object per example, no image augmentation, ResNet-18
  at 256x256 (main.py --resolution 256; 7x7 stem with max-pool), batch 1024, Adam lr 1e-3 with
  coupled weight decay 1e-6 and no schedule, 2000 epochs (the README's command). The ResNet is
  torchvision's layout; the official src/resnet.py pads, strides and normalises differently
  (`models.sie_resnet`, `model.name="resnet18_sie"`, what its checkpoints convert to).
  """
  c.data.name = "3diebench"
  c.data.image_size = 256  # main.py: --resolution default 256
  c.model.name = "resnet18"  # README: --arch resnet18
  c.model.width_multiplier = 1.0
  c.model.cifar_stem = False
  c.augment.policy = "none"  # no augmentation: the transformation is the rendered one
  c.data.pairs = True
  c.steerer.use_colour = False  # rotation only (SIE); SIERotColor uses the 6 numbers
  c.batch_size = 1024  # README: --batch-size 1024
  c.total_steps = steps(2000, IEBENCH_TRAIN_OBJECTS, c.batch_size)  # README: --epochs 2000
  c.optim.name = "adam"  # main.py: torch.optim.Adam(lr=base_lr, weight_decay=wd)
  c.optim.learning_rate = 1e-3  # README: --base-lr 1e-3
  c.optim.weight_decay = 1e-6  # main.py: --wd default 1e-6
  c.optim.warmup_epochs = 0.0
  c.optim.schedule = "constant"  # main.py has no learning-rate scheduler
  c.eval.evaluators = ("linear_probe", "sie_retrieval", "rotation_r2")
  c.eval.max_examples = 0
  c.eval.probe_epochs = 300  # README: eval_classification.py --epochs 300 (Adam lr 1e-3)
  c.eval.probe_lr = 1e-3
  c.eval.probe_optimizer = "adam"
  return c


def sie(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """SIE's published pretraining command (facebookresearch/SIE README; "models" = src/models.py):
  --experience SIE --equi 256 --mlp 2048-2048-2048 --sim-coeff 10 --std-coeff 10 --cov-coeff 1
  --equi-factor 0.45 --hypernetwork linear. Its other experiences (SIERotColor) share it."""
  c = iebench(c)
  c.method = "sie"
  # --mlp 2048-2048-2048 scaled by each half's share (models: mlp_dims * ratio, --equi 256 of
  # 512): each half's projector is 256 -> 1024 -> 1024 -> 1024.
  c.head.proj_layers, c.head.proj_hidden, c.head.proj_dim = 2, 1024, 1024
  c.head.proj_output = "linear"  # models: Projector ends with nn.Linear(..., bias=False)
  c.steerer.name = "hyper_linear"  # --hypernetwork linear (W(g) = reshape(H g), no bias)
  c.loss.sim_coeff = 10.0  # --sim-coeff 10
  c.loss.std_coeff = 10.0  # --std-coeff 10 (also weighs the prediction's variance term)
  c.loss.cov_coeff = 1.0  # --cov-coeff 1
  c.loss.equi_factor = 0.45  # --equi-factor 0.45 (weight 0.45 * 10 = 4.5)
  return c
