"""steerjax: equivariant and steerable representation learning in JAX/Flax.

The Python API (`steerjax.api`) is importable from here; it loads on first use, so
`import steerjax` stays cheap.
"""

__version__ = "0.1.0"

from steerjax import cpu_flags

cpu_flags.apply()

# `train` stays `steerjax.api.train`: `steerjax.train` is the trainer module.
_API = ("Run", "contact_sheet", "load_config", "load_encoder", "load_run", "plot_loss",
        "read_metrics")


def __getattr__(name):
  if name in _API:
    from steerjax import api  # pylint: disable=g-import-not-at-top
    return getattr(api, name)
  if name == "measure_equivariance":
    from steerjax.metrics import learned_equivariance  # pylint: disable=g-import-not-at-top
    return learned_equivariance.measure
  raise AttributeError(f"module 'steerjax' has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + list(_API) + ["measure_equivariance"])
