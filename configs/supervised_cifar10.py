"""Supervised ResNet-18 on CIFAR10: cross-entropy on SimCLR-CIFAR augmented views.

    python -m steerjax.main --config configs/supervised_cifar10.py --workdir runs/supervised_cifar10
    python -m steerjax.main --config configs/supervised_cifar10.py:smoke --workdir /tmp/smoke  # CPU, ~1 min

None of the seed papers publishes a supervised CIFAR recipe; this is the common one
(He et al., 2016 §4.2 style: SGD momentum 0.9, lr 0.1, weight decay 5e-4, batch 128; cosine
over 200 epochs as in most CIFAR ResNet baselines). It is the reference row next to the
self-supervised methods; the augmentation is SimCLR's CIFAR policy so all rows see the same
views.
"""

from steerjax import config as config_lib
from steerjax import presets


def get_config(arg=None):
  c = config_lib.base_config()
  c.method = "supervised"
  presets.cifar10(c)
  c.augment.policy = "simclr_cifar"
  c.batch_size = 128
  c.total_steps = presets.steps(200, presets.CIFAR10_TRAIN, c.batch_size)
  c.optim.name = "sgd"
  c.optim.learning_rate = 0.1
  c.optim.momentum = 0.9
  c.optim.nesterov = True
  c.optim.weight_decay = 5e-4
  c.optim.warmup_epochs = 0.0
  c.optim.schedule = "cosine"
  c.eval.evaluators = ("linear_probe", "knn")
  c.eval.max_examples = 0
  return presets.finish(c, arg, "supervised_cifar10")
