"""Methods by name; each lives in its own module and subclasses `base.Method`."""

import importlib

from steerjax.methods.base import Method

# config.method -> (module in steerjax.methods, class name)
REGISTRY = {
    "supervised": ("supervised", "Supervised"),
    "steerable": ("steerable", "Steerable"),
    "simclr": ("simclr", "SimCLR"),
    "byol": ("byol", "BYOL"),
    "vicreg": ("vicreg", "VICReg"),
    "equimod_simclr": ("equimod", "EquiModSimCLR"),
    "equimod_byol": ("equimod", "EquiModBYOL"),
    "equimod_pairs": ("equimod", "EquiModPairs"),
    "vicreg_equimod": ("vicreg_equimod", "VICRegEquiMod"),
    "sie": ("sie", "SIE"),
    "augself": ("augself", "AugSelf"),
}


def get_method(config, num_classes: int) -> Method:
  if config.method not in REGISTRY:
    raise ValueError(f"config.method={config.method!r}; allowed: {', '.join(sorted(REGISTRY))}")
  module, cls = REGISTRY[config.method]
  return getattr(importlib.import_module(f"steerjax.methods.{module}"), cls)(config, num_classes)
