"""The config schema every experiment starts from, and its validation.

Every key an experiment may set is declared here with its default, so a typo
in a config file or a `--config.key=value` override is caught before any work
starts and reported as one line naming the key and what is allowed.
"""

import difflib
import os

import ml_collections

from steerjax import evaluators
from steerjax import methods
from steerjax import optim
from steerjax import steerers
from steerjax.data import rotations
from steerjax.metrics import probes
from steerjax.models import heads
from steerjax.models import encoders

METHODS = tuple(methods.REGISTRY)
TASKS = ("simclr", "supervised")
MODELS = encoders.ENCODERS
STEERERS = tuple(steerers.STEERERS)
OPTIMIZERS = optim.OPTIMIZERS
SCHEDULES = optim.SCHEDULES
DTYPES = ("float32", "bfloat16")
EVALUATORS = tuple(evaluators.REGISTRY)
PROBE_OPTIMIZERS = ("sgd", "adam", "lbfgs")
PROBE_PROTOCOLS = ("fast", *probes.PROTOCOLS)

# Keys that name one of a fixed set (augment policies, eval.evaluators and data.name are checked
# by `validate` on their own: they also take a ConfigDict, a tuple, or a prepared tfds name).
CHOICES = {"method": METHODS, "task": TASKS, "model.name": MODELS, "steerer.name": STEERERS,
           "optim.name": OPTIMIZERS, "optim.schedule": SCHEDULES, "model.dtype": DTYPES,
           "head.proj_output": heads.OUTPUTS, "eval.probe_optimizer": PROBE_OPTIMIZERS,
           "data.quaternion_sign": rotations.SIGNS, "eval.probe_protocol": PROBE_PROTOCOLS}


class ConfigError(ValueError):
  """A config key has a value that is not allowed; the message names both."""


def base_config() -> ml_collections.ConfigDict:
  """All keys with their defaults: steerable SimCLR on synthetic3d, small and fast."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.method = "steerable"
  c.task = "simclr"  # steerable only: the task loss next to the steering term.

  c.data = dict(
      name="synthetic3d",  # or "3diebench", "folder", or a tfds name ("cifar10", "imagenet2012", ...)
      image_size=32,
      # synthetic3d
      num_objects=2000, views_per_object=10, val_fraction=0.2, seed=0,
      # tfds: data_dir "" means tfds' default (~/tensorflow_datasets or $TFDS_DATA_DIR)
      data_dir="", train_split="train", val_split="test",
      # simclr/vicreg/augself/steerable on multi-view data: view 2 comes from another rendered
      # view of the object (SIE's 3DIEBench protocol) instead of the same image.
      pairs=False,
      # 3diebench: the folder holding SYNSET/OBJECT/image_K.jpg; index_dir holds
      # train_images.npy / val_images.npy ("" = root)
      # folder: root holds CLASS/*.jpg|png or *.jpg|png (val = seeded val_fraction hold-out);
      # skip_unreadable skips (and counts in the log) unreadable files instead of stopping
      # (folder: drops them; 3diebench: a view is replaced by the next readable view of its object).
      root="", index_dir="", skip_unreadable=False,
      # Sign of the relative rotation quaternion g of view pairs: "canonical" (w >= 0, steerjax's)
      # or "official" (the official SIE code's, w may be < 0: for predictors it trained).
      quaternion_sign="canonical",
  )
  # patch_size: side of the ViT/Mixer patches (their feature maps' stride).
  c.model = dict(name="resnet18", width_multiplier=0.25, cifar_stem=True, dtype="float32",
                 patch_size=4)
  # policy, policy2: a policy name or a ConfigDict defining one (`augment.get_policy`);
  # type_safe=False lets a config file assign either. A pair name ("byol") gives view 1 and
  # view 2 their own policies. policy2: the second view's policy; "" means policy's.
  # size: side of the views the encoder sees; 0 means data.image_size (e.g. 256 stored -> 224).
  c.augment = ml_collections.ConfigDict(dict(policy="simclr_cifar", policy2="", size=0),
                                        type_safe=False)
  c.steerer = dict(name="linear", hidden=512, use_colour=False)
  c.loss = dict(
      temperature=0.5,  # NT-Xent τ of the invariant/task term
      steer_weight=1.0,  # λ of the steerable term
      equi_weight=1.0,  # EquiMod λ
      equi_temperature=0.2,  # EquiMod τ of the equivariant term
      sim_coeff=10.0, std_coeff=10.0, cov_coeff=1.0,  # VICReg/SIE (SIE's values)
      equi_factor=0.45,  # SIE: equivariance weight = equi_factor * sim_coeff
      augself_weight=1.0,
      ema_base=0.996,  # BYOL τ at step 0, cosine to 1
  )
  c.head = dict(
      proj_hidden=512, proj_dim=128, pred_hidden=512,
      proj_layers=1,  # hidden layers of the projector (SimCLR-CIFAR/EquiMod 2, BYOL 1, SIE 2)
      # Projector output layer (models.heads.OUTPUTS): "bn" = Dense -> BN without affine (SimCLR,
      # EquiMod), "linear" = bias-free Dense (VICReg/SIE code), "linear_bias" (BYOL).
      proj_output="bn",
      equi_hidden=512, equi_dim=128, equi_layers=2,  # EquiMod equivariant head
      augself_hidden=0,  # AugSelf MLP width; 0 = twice its input (SIE's baseline)
  )

  c.batch_size = 128
  c.total_steps = 150
  c.optim = dict(name="adamw", learning_rate=2e-3, weight_decay=1e-6, momentum=0.9,
                 nesterov=False, warmup_epochs=0.0, schedule="cosine", warmup_steps=0)

  c.log_every = 10
  c.checkpoint_every = 50
  c.keep_checkpoints = 2
  c.progress = True

  # python -m steerjax.fit_steerer (a post-hoc steerer; family steerer.name, policy
  # augment.policy): training pairs, their batch, the closed form's relative ridge λ and the
  # gradient-fitted families' Adam steps and learning rate.
  c.fit = dict(examples=4096, batch_size=256, ridge=1e-3, steps=1000, learning_rate=1e-3)

  # Keys every evaluator shares; each evaluator declares its own (steerjax/evaluators/*.py).
  c.eval = dict(
      evaluators=EVALUATORS,
      batch_size=512,
      max_examples=4000,  # cap on evaluation examples per split (0 = all)
      # Online monitors (steerjax/monitor.py) every every_steps training steps (0 = off): kNN
      # top-1 of monitor_examples val images against monitor_bank train images, steering error.
      every_steps=50, monitor_examples=256, monitor_bank=512,
      **evaluators.config_defaults(),
  )
  return c


class Open(float):
  """A bound that is excluded: `(Open(0), 1.0)` means "> 0 and <= 1"."""


_INT32 = 2**31 - 1
_WIDTH = 65536  # widest layer any head or steerer may ask for
_WEIGHT = 1e6  # largest loss weight or coefficient

# The allowed [low, high] of every numeric key (low excluded where `Open`). Upper bounds catch a
# typo'd 10^6-pixel image or 10^12-object dataset here instead of as an out-of-memory crash
# minutes later; step counters are int32 in the optimizer state.
RANGES = {
    "seed": (0, _INT32), "batch_size": (1, 2**20), "total_steps": (1, _INT32),
    "log_every": (1, _INT32), "checkpoint_every": (1, _INT32), "keep_checkpoints": (1, 10_000),
    "data.image_size": (8, 1024), "data.num_objects": (2, 100_000),
    "data.views_per_object": (1, 1000), "data.val_fraction": (Open(0), Open(1)),
    "data.seed": (0, _INT32),
    "model.width_multiplier": (Open(0), 16.0), "model.patch_size": (1, 1024),
    "augment.size": (0, 1024),
    "steerer.hidden": (1, _WIDTH),
    "loss.temperature": (Open(0), 100.0), "loss.equi_temperature": (Open(0), 100.0),
    "loss.steer_weight": (0, _WEIGHT), "loss.equi_weight": (0, _WEIGHT),
    "loss.sim_coeff": (0, _WEIGHT), "loss.std_coeff": (0, _WEIGHT), "loss.cov_coeff": (0, _WEIGHT),
    "loss.equi_factor": (0, _WEIGHT), "loss.augself_weight": (0, _WEIGHT),
    "loss.ema_base": (0, 1.0),
    "head.proj_hidden": (1, _WIDTH), "head.proj_dim": (1, _WIDTH), "head.pred_hidden": (1, _WIDTH),
    "head.proj_layers": (0, 16), "head.equi_hidden": (1, _WIDTH), "head.equi_dim": (1, _WIDTH),
    "head.equi_layers": (0, 16), "head.augself_hidden": (0, _WIDTH),
    "optim.learning_rate": (Open(0), 1e6), "optim.weight_decay": (0, 100.0),
    "optim.momentum": (0, 1.0), "optim.warmup_epochs": (0, 1e6), "optim.warmup_steps": (0, _INT32),
    "fit.examples": (1, 10**8), "fit.batch_size": (1, 2**20), "fit.ridge": (0, 1e6),
    "fit.steps": (1, 10**7), "fit.learning_rate": (Open(0), 100.0),
    "eval.batch_size": (1, 2**20), "eval.max_examples": (0, _INT32),
    "eval.every_steps": (0, _INT32), "eval.monitor_examples": (1, 10**6),
    "eval.monitor_bank": (1, 10**6),
    "eval.knn_k": (1, 10_000), "eval.equivariance_examples": (1, 10**6),
    "eval.probe_epochs": (1, 100_000), "eval.probe_lr": (Open(0), 100.0),
    "eval.probe_batch_size": (1, 2**20), "eval.pixel_probe_size": (0, 256),
    "eval.ood_severity": (1, 5), "eval.ood_knn_k": (1, 10_000), "eval.factor_ridge": (Open(0), 1e6),
    "eval.factor_examples": (2, 10**7),
    "eval.r2_hidden": (1, _WIDTH), "eval.r2_steps": (1, 10**7),
    "eval.tta_views": (1, 1024), "eval.tta_examples": (1, 10**7),
}


def _in_range(value, low, high) -> bool:
  return ((low < value if isinstance(low, Open) else low <= value)
          and (value < high if isinstance(high, Open) else value <= high))


def _describe_range(low, high) -> str:
  kind = "an integer" if isinstance(low, int) and isinstance(high, int) else "a number"
  return (f"{kind} in {'(' if isinstance(low, Open) else '['}{low:g}, "
          f"{high:g}{')' if isinstance(high, Open) else ']'}")


def _fail(key: str, value, allowed) -> None:
  raise ConfigError(f"config.{key}={value!r} is not allowed; expected {allowed}")


# Keys that take a name (str) or a ConfigDict; `validate` checks their values.
_NAME_OR_CONFIG = ("augment.policy", "augment.policy2")


def _check_keys(cfg, schema, prefix: str = "") -> None:
  for key in cfg.keys():
    if key not in schema:
      close = difflib.get_close_matches(key, list(schema.keys()), n=1)
      hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
      raise ConfigError(f"config.{prefix}{key} is not a known key{hint}; known keys: "
                        f"{', '.join(sorted(schema.keys()))}")
    if f"{prefix}{key}" in _NAME_OR_CONFIG and isinstance(cfg[key], (dict, ml_collections.ConfigDict)):
      continue
    if isinstance(schema[key], ml_collections.ConfigDict):
      _check_keys(cfg[key], schema[key], f"{prefix}{key}.")
    elif schema[key] is not None and cfg[key] is not None:
      expected, got = type(schema[key]), type(cfg[key])
      numeric = expected is float and got is int
      if got is not expected and not numeric and not (expected is tuple and got is list):
        raise ConfigError(f"config.{prefix}{key}={cfg[key]!r} has type {got.__name__}; "
                          f"expected {expected.__name__}")
      if expected is tuple:
        _check_elements(f"{prefix}{key}", cfg[key], schema[key])


def _check_elements(key: str, value, default: tuple) -> None:
  """Elements of a tuple key have its default's element type (numbers, or names if it is empty)."""
  kind = type(default[0]) if default else str
  for element in value:
    if not (type(element) is kind or kind is float and type(element) is int):
      raise ConfigError(f"config.{key}={tuple(value)!r} holds {element!r}; expected "
                        f"{'names (strings)' if kind is str else 'numbers'}")


def validate(cfg: ml_collections.ConfigDict, num_devices: int = 1) -> None:
  """Raises ConfigError naming the first offending key and the allowed values."""
  _check_keys(cfg, base_config())
  for key, allowed in CHOICES.items():
    value = cfg
    for part in key.split("."):
      value = value[part]
    if value not in allowed:
      _fail(key, value, f"one of {', '.join(allowed)}")
  for ev in cfg.eval.evaluators:
    if ev not in EVALUATORS:
      _fail("eval.evaluators", ev, f"names from {', '.join(EVALUATORS)}")
  if len(set(cfg.eval.evaluators)) < len(cfg.eval.evaluators):
    _fail("eval.evaluators", tuple(cfg.eval.evaluators), "each name at most once")
  from steerjax.augment import policies  # pylint: disable=g-import-not-at-top
  if cfg.eval.tta_policy.get("base", "none") not in policies.POLICY_NAMES:
    _fail("eval.tta_policy.base", cfg.eval.tta_policy.base, f"one of {', '.join(policies.POLICY_NAMES)}")
  try:
    policies.get_policy(cfg.eval.tta_policy.to_dict())
  except (ValueError, TypeError) as e:
    raise ConfigError(f"config.eval.tta_policy: {e}") from None
  from steerjax.evaluators import ood  # pylint: disable=g-import-not-at-top
  for name in cfg.eval.ood_corruptions:
    if name not in ood.corruptions.ALL:
      _fail("eval.ood_corruptions", name, f"names from {', '.join(ood.corruptions.ALL)}")
  if cfg.eval.ood_baseline:
    try:
      ood.baseline_errors(cfg.eval.ood_baseline, cfg.eval.ood_corruptions)
    except ValueError as e:
      _fail("eval.ood_baseline", cfg.eval.ood_baseline, f"a baseline run's report.json: {e}")
  pairs = {}
  for key in ("policy", "policy2"):
    value = cfg.augment[key]
    if isinstance(value, str):
      if value and value not in policies.POLICY_NAMES or not value and key == "policy":
        _fail(f"augment.{key}", value, f"one of {', '.join(policies.POLICY_NAMES)} or a ConfigDict "
              "(set in a config file: an override takes a name)")
      pairs[key] = value in policies.PAIR_NAMES
    else:
      try:
        pairs[key] = isinstance(policies.get_policy(value), tuple)
      except (ValueError, TypeError) as e:
        raise ConfigError(f"config.augment.{key}: {e}") from None
  if pairs["policy2"] or (pairs["policy"] and cfg.augment.policy2):
    _fail("augment.policy2", cfg.augment.policy2,
          "\"\" when augment.policy is a pair, and never a pair itself (a pair sets both views)")
  for key, (low, high) in RANGES.items():
    value = cfg
    for part in key.split("."):
      value = value[part]
    if not _in_range(value, low, high):
      _fail(key, value, _describe_range(low, high))
  if cfg.batch_size % num_devices:
    _fail("batch_size", cfg.batch_size,
          f"a multiple of the device count ({num_devices}), so every device gets an equal slice")
  if cfg.data.name == "synthetic3d":  # its size is known before it is generated
    units = int(cfg.data.num_objects * (1 - cfg.data.val_fraction)) * (
        1 if cfg.data.pairs else cfg.data.views_per_object)
    if cfg.batch_size > units:
      _fail("batch_size", cfg.batch_size, f"at most the ~{units} training "
            f"{'objects' if cfg.data.pairs else 'images'} of synthetic3d (data.num_objects x "
            f"(1 - data.val_fraction){'' if cfg.data.pairs else ' x data.views_per_object'})")
  view = cfg.augment.size or cfg.data.image_size
  if cfg.model.name in ("vit", "mixer") and not (cfg.model.patch_size > 0
                                                 and view % cfg.model.patch_size == 0):
    _fail("model.patch_size", cfg.model.patch_size,
          f"a positive divisor of the view size {view} (the ViT/Mixer patch grid)")
  if cfg.model.name.endswith("_sie") and cfg.model.cifar_stem:
    _fail("model.cifar_stem", True, f"False with model.name={cfg.model.name!r} (the SIE code's 7x7 stem)")
  _check_data_name(cfg.data)


def check_data_found(data_cfg) -> None:
  """The dataset `data` names is on disk: a look at folders, before a run writes anything.

  Separate from `validate`, which judges a config on any machine (the data may live elsewhere).
  """
  from steerjax.data import tfds_source  # pylint: disable=g-import-not-at-top  (does not import tfds)
  name = data_cfg.name
  if name == "synthetic3d":
    return
  if name in ("folder", "3diebench"):
    if not os.path.isdir(data_cfg.root):
      _fail("data.root", data_cfg.root, f"an existing folder holding the {name} images")
    return
  data_dir = data_cfg.data_dir or tfds_source.default_data_dir()
  if "://" in data_dir or os.path.isdir(os.path.join(data_dir, name.partition(":")[0])):
    return  # a bucket is read by tfds itself
  prepared = sorted(d for d in os.listdir(data_dir) if d != "downloads" and not d.startswith(".")
                    and os.path.isdir(os.path.join(data_dir, d))) if os.path.isdir(data_dir) else []
  _fail("data.name", name, "synthetic3d, 3diebench, folder, or a tfds dataset prepared in "
        f"{data_dir} ({'there: ' + ', '.join(prepared[:20]) if prepared else 'none there'}); prepare one "
        f"with `tfds build NAME --data_dir={data_dir} --file_format=array_record` where TensorFlow is "
        "installed, or set data.data_dir")


def _check_data_name(data_cfg) -> None:
  """A near-miss of a built-in source name (e.g. 'folders') fails here rather than as a missing tfds set."""
  from steerjax import data  # pylint: disable=g-import-not-at-top
  from steerjax.data import tfds_source  # pylint: disable=g-import-not-at-top  (does not import tfds)
  name = data_cfg.name
  if name not in data.SOURCES and name not in tfds_source.KNOWN_DATASETS and difflib.get_close_matches(
      name, data.SOURCES, n=1, cutoff=0.8):
    _fail("data.name", name, f"one of {', '.join(data.SOURCES)}, or a prepared tfds name such as "
          f"{', '.join(tfds_source.KNOWN_DATASETS[:3])}")
  if name == "folder" and not data_cfg.root:
    _fail("data.root", data_cfg.root, "a folder of CLASS/*.jpg|png sub-folders or *.jpg|png images "
          "(data.name='folder')")
