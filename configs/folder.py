"""Steerable SimCLR on your own images: class sub-folders (ImageFolder layout) or one flat folder.

    python -m steerjax.main --config configs/folder.py --config.data.root=/path/to/images --workdir runs/folder

data.root holds CLASS/*.jpg|png (labels = sorted class names) or *.jpg|png (unlabeled; the
linear probe and k-NN are then trivial). Images of any size are resized on the host to
data.image_size (shorter side, centre crop); data.val_fraction of the files, drawn with
data.seed, are held out as the validation split. data.skip_unreadable=True drops and counts
files PIL cannot read instead of stopping at the first. Without --config.data.root it reads ./images.
"""

from steerjax import config as config_lib
from steerjax import presets


def get_config(arg=None):
  c = config_lib.base_config()
  c.data.name, c.data.root = "folder", "images"
  c.data.image_size, c.data.val_fraction = 96, 0.1
  c.model.name, c.model.width_multiplier, c.model.cifar_stem = "resnet18", 0.5, False
  c.augment.policy = "simclr_imagenet"
  c.batch_size, c.total_steps = 128, 2000
  c.optim.warmup_steps = 100
  c.checkpoint_every = 500
  c.eval.transfer_datasets, c.eval.ood_datasets = (), ()
  return presets.finish(c, arg, "folder")
