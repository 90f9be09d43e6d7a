"""torchvision-layout ResNet state dicts <-> steerjax ResNet variables.

Both sides use the same architecture: symmetric padding k//2, BatchNorm eps 1e-5,
stride on the 3x3 of a bottleneck (v1.5). What differs is the layout: PyTorch
kernels are [out, in, kh, kw] (NCHW activations), Flax's are [kh, kw, in, out]
(NHWC); PyTorch names layers `layerS.B.convK`, Flax numbers submodules in
creation order. steerjax's encoder normalises with the ImageNet mean/std inside,
so `encoder(x)` equals `torch_model(normalize(x))` for x in [0, 1].
The classifier `fc.*` is not part of the encoder: it is dropped on the way in.
The `_sie` archs are the official SIE code's ResNet (`sie_resnet`): torchvision's names, plus
`layer1.0.downsample`; its checkpoints' heads convert in `official_heads`.
"""

from typing import Any

import numpy as np

from steerjax.models import encoders
from steerjax.models import resnet
from steerjax.models import sie_resnet

ARCHS = {
    "resnet18": ("resnet18", False),
    "resnet50": ("resnet50", False),
    "resnet18_cifar": ("resnet18", True),  # 3x3/1 stem conv, no max-pool
    "resnet50_cifar": ("resnet50", True),
    "resnet18_sie": ("resnet18_sie", False),  # facebookresearch/SIE src/resnet.py
    "resnet50_sie": ("resnet50_sie", False),
}
_IGNORED_PREFIXES = ("fc.",)


class StateDictError(ValueError):
  """A state dict does not fit the architecture; the message names the first bad key."""


def _check_arch(arch: str) -> tuple[str, bool]:
  if arch not in ARCHS:
    raise StateDictError(f"unknown arch {arch!r}; known: {', '.join(ARCHS)}")
  return ARCHS[arch]


def _layer_names(name: str) -> list[tuple[str, tuple[str, ...], str]]:
  """(torch prefix, flax module path, 'conv' | 'bn') for every layer, in order."""
  sie = name in sie_resnet.ARCHITECTURES  # a projection shortcut on every stage's first block
  stage_sizes, block_cls = (sie_resnet.ARCHITECTURES if sie else resnet.ARCHITECTURES)[name]
  block_name = block_cls.__name__
  convs = 2 if block_cls.expansion == 1 else 3
  layers = [("conv1", ("Conv_0",), "conv"), ("bn1", ("BatchNorm_0",), "bn")]
  n = 0
  for s, num_blocks in enumerate(stage_sizes):
    for b in range(num_blocks):
      block = f"{block_name}_{n}"
      for k in range(convs):
        layers.append((f"layer{s + 1}.{b}.conv{k + 1}", (block, f"Conv_{k}"), "conv"))
        layers.append((f"layer{s + 1}.{b}.bn{k + 1}", (block, f"BatchNorm_{k}"), "bn"))
      if b == 0 and (sie or s > 0 or block_cls is resnet.Bottleneck):
        layers.append((f"layer{s + 1}.{b}.downsample.0", (block, f"Conv_{convs}"), "conv"))
        layers.append((f"layer{s + 1}.{b}.downsample.1", (block, f"BatchNorm_{convs}"), "bn"))
      n += 1
  return layers


def _torch_keys(prefix: str, kind: str) -> list[str]:
  if kind == "conv":
    return [f"{prefix}.weight"]
  return [f"{prefix}.{k}" for k in ("weight", "bias", "running_mean", "running_var")]


def width_multiplier(state_dict: dict[str, Any]) -> float:
  """The width of a (possibly width-reduced) ResNet from its stem: conv1 channels / 64."""
  if "conv1.weight" not in state_dict:
    raise StateDictError("missing key conv1.weight (expected a torchvision ResNet state dict)")
  return np.shape(state_dict["conv1.weight"])[0] / 64


def encoder_for(state_dict: dict[str, Any], arch: str):
  """The steerjax encoder whose parameters fit `state_dict`."""
  name, cifar_stem = _check_arch(arch)
  return encoders.get_encoder(name, width_multiplier(state_dict), cifar_stem)


def _expected_shapes(module) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  size = 32 if module.cifar_stem else 64
  return jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)), train=False))


def _get(tree: dict, path: tuple[str, ...]) -> Any:
  for p in path:
    tree = tree[p]
  return tree


def from_torch_state_dict(state_dict: dict[str, Any], arch: str, key_prefix: str = "") -> dict:
  """Flax variables {'params', 'batch_stats'} of `encoder_for(state_dict, arch)`.

  `key_prefix`: the backbone's keys start with it (e.g. "backbone."); other keys are ignored.
  Raises StateDictError naming the first key whose presence or shape does not
  match the arch (with the shape it has and the one expected).
  """
  name, _ = _check_arch(arch)
  state_dict = {k[len(key_prefix):]: v for k, v in state_dict.items() if k.startswith(key_prefix)}
  module = encoder_for(state_dict, arch)
  shapes = _expected_shapes(module)
  sd = {k: np.asarray(v) for k, v in state_dict.items()
        if not k.endswith("num_batches_tracked") and not k.startswith(_IGNORED_PREFIXES)}
  named = lambda key: key_prefix + key  # as the checkpoint spells it
  params, stats = {}, {}

  def put(tree, path, leaf, value):
    node = tree
    for p in path:
      node = node.setdefault(p, {})
    node[leaf] = value

  used = set()
  for prefix, path, kind in _layer_names(name):
    for key in _torch_keys(prefix, kind):
      if key not in sd:
        raise StateDictError(f"missing key {named(key)} (arch {arch})")
      used.add(key)
    if kind == "conv":
      want = _get(shapes["params"], path)["kernel"].shape
      got = sd[f"{prefix}.weight"].shape
      want_torch = (want[3], want[2], want[0], want[1])
      if got != want_torch:
        raise StateDictError(f"{named(prefix)}.weight has shape {tuple(got)}, expected {want_torch} for arch {arch}")
      put(params, path, "kernel", np.transpose(sd[f"{prefix}.weight"], (2, 3, 1, 0)).astype(np.float32))
    else:
      want = _get(shapes["params"], path)["scale"].shape
      for key, tree, leaf in (("weight", params, "scale"), ("bias", params, "bias"),
                              ("running_mean", stats, "mean"), ("running_var", stats, "var")):
        got = sd[f"{prefix}.{key}"].shape
        if got != want:
          raise StateDictError(f"{named(prefix)}.{key} has shape {tuple(got)}, expected {tuple(want)} for arch {arch}")
        put(tree, path, leaf, sd[f"{prefix}.{key}"].astype(np.float32))
  extra = sorted(set(sd) - used)
  if extra:
    raise StateDictError(f"unexpected key {named(extra[0])} (shape {tuple(sd[extra[0]].shape)}) for arch {arch}")
  return {"params": params, "batch_stats": stats}


def to_torch_state_dict(variables: dict, arch: str) -> dict[str, np.ndarray]:
  """The inverse of `from_torch_state_dict` (without `fc`): NumPy arrays under torchvision keys."""
  name, _ = _check_arch(arch)
  params, stats = variables["params"], variables["batch_stats"]
  out = {}
  for prefix, path, kind in _layer_names(name):
    if kind == "conv":
      out[f"{prefix}.weight"] = np.transpose(np.asarray(_get(params, path)["kernel"]), (3, 2, 0, 1))
    else:
      p, s = _get(params, path), _get(stats, path)
      out[f"{prefix}.weight"] = np.asarray(p["scale"])
      out[f"{prefix}.bias"] = np.asarray(p["bias"])
      out[f"{prefix}.running_mean"] = np.asarray(s["mean"])
      out[f"{prefix}.running_var"] = np.asarray(s["var"])
      out[f"{prefix}.num_batches_tracked"] = np.asarray(0, np.int64)
  return out
