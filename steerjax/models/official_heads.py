"""Official SIE and EquiMod PyTorch checkpoints -> variables of steerjax's SIE / EquiMod models.

The keys, from the official code's model classes (state dict under "model", DDP's `module.`
stripped by `convert.read_state_dict`):
  SIE (facebookresearch/SIE src/models.py, classes SIE, SIERotColor; SimCLREquiMod and
  SimCLREquiModRotColor, its EquiMod baseline, have the same keys with both projectors on the
  whole representation: steerjax's `equimod_pairs`):
    backbone.*          its ResNet (`sie_resnet`, archs resnet18_sie / resnet50_sie);
    projector_inv.*, projector_equi.*  Projector: (Linear with bias, BatchNorm1d, ReLU) x n,
                        then Linear without bias, on the first / second part of the representation;
    predictor.hypernet.net.0.weight [d·d, k]  ParametrizedNet with `--hypernetwork linear`:
                        W(g) = weight @ g viewed [d, d], ẑ = W z (k = 4, or 6 for SIERotColor);
    evaluator.*         the online probes, dropped.
  EquiMod (ADevillers/EquiMod, branches SimCLR+EquiMod and BYOL+EquiMod, src/model.py):
    resnet.*            torchvision ResNet (CIFAR stem where conv1 is 3x3);
    proj_head_inv.*     the invariant projector; predictor_inv.* BYOL's predictor (BYOL branch);
    proj_head_eq.*      the equivariant head, ending in an affine-free BatchNorm1d;
    proj_head_t.0/.1, predictor_eq.0/.1  `steerers.EquiModPredictor`'s Dense_0/BatchNorm_0 and
                        Dense_1/BatchNorm_1 (the concatenation [y0 ; p] has the same order).
    The BYOL branch's `momentum_model` (the EMA target) is not read: evaluation uses the online
    network, and the converted run's target starts as a copy of it.

Linear → Dense `kernel = weight.T`; BatchNorm1d → scale, bias and the running mean/var (eps
1e-5 on both sides). steerjax's hidden Dense layers have no bias (BN's shift makes it
redundant): SIE's Linear bias b before a BatchNorm is folded into its running mean
(BN(Wx + b) = BN'(Wx) with mean' = mean − b): exact in inference mode, and in training too,
where the batch mean absorbs b. What steerjax cannot express (a deep or biased hypernetwork,
SIE's `--predictor` hidden layers, an equivariant part other than half or all of the
representation, hidden widths that differ) is an `OfficialCheckpointError` naming the first key
that shows it.
"""

import re
from typing import Any

import numpy as np

from steerjax.models import torch_weights

SIE_PREFIXES = ("backbone.", "projector_inv.", "projector_equi.", "predictor.", "evaluator.")
EQUIMOD_PREFIXES = ("resnet.", "proj_head_inv.", "predictor_inv.", "proj_head_eq.", "proj_head_t.",
                    "predictor_eq.")


class OfficialCheckpointError(torch_weights.StateDictError):
  """The checkpoint's layout is not one steerjax's model has; the message names the key."""


def kind(state_dict: dict) -> str | None:
  """"sie", "equimod" or None (a bare backbone) from the checkpoint's keys."""
  if "backbone.conv1.weight" in state_dict and any(k.startswith("projector_equi.") for k in state_dict):
    return "sie"
  if "resnet.conv1.weight" in state_dict and any(k.startswith("proj_head_eq.") for k in state_dict):
    return "equimod"
  return None


def _sub(state_dict: dict, prefix: str) -> dict[str, np.ndarray]:
  return {k[len(prefix):]: np.asarray(v) for k, v in state_dict.items()
          if k.startswith(prefix) and not k.endswith("num_batches_tracked")}


def _f32(x) -> np.ndarray:
  return np.asarray(x, np.float32)


def mlp_head(state_dict: dict, prefix: str):
  """An `nn.Sequential` of Linear / BatchNorm1d / ReLU under `prefix` as an `MLPHead`:
  ((hidden widths, out_dim, output), params, batch_stats, {flax path: torch key})."""
  sd = _sub(state_dict, prefix)
  indices = sorted({int(m.group(1)) for k in sd if (m := re.match(r"(\d+)\.", k))})
  if not indices:
    raise OfficialCheckpointError(f"missing key {prefix}0.weight")
  layers = []  # ("linear" | "bn", index)
  for i in indices:
    if f"{i}.running_mean" in sd:
      layers.append(("bn", i))
    elif f"{i}.weight" in sd and sd[f"{i}.weight"].ndim == 2:
      layers.append(("linear", i))
    else:
      raise OfficialCheckpointError(f"unexpected key {prefix}{min(k for k in sd if k.startswith(f'{i}.'))}: "
                                    "neither a Linear nor a BatchNorm1d")
  params, stats, origin, hidden = {}, {}, {}, []
  n_dense = n_bn = 0
  pos = 0
  while pos < len(layers):
    what, i = layers[pos]
    if what != "linear":
      raise OfficialCheckpointError(f"{prefix}{i}: a BatchNorm1d not after a Linear; steerjax's heads "
                                    "are (Linear, BatchNorm1d, ReLU) x n then Linear [BatchNorm1d]")
    weight, bias = sd[f"{i}.weight"], sd.get(f"{i}.bias")
    dense = f"Dense_{n_dense}"
    n_dense += 1
    params[dense] = {"kernel": _f32(weight.T)}
    origin[("params", dense, "kernel")] = f"{prefix}{i}.weight"
    bn = layers[pos + 1][1] if pos + 1 < len(layers) and layers[pos + 1][0] == "bn" else None
    last = pos + (2 if bn is not None else 1) >= len(layers)
    if bn is None:  # the output Linear
      if not last:
        raise OfficialCheckpointError(f"{prefix}{i}.weight: two Linear layers in a row; steerjax's heads "
                                      "put a BatchNorm1d between hidden layers")
      if bias is not None:
        params[dense]["bias"] = _f32(bias)
        origin[("params", dense, "bias")] = f"{prefix}{i}.bias"
      output = "linear_bias" if bias is not None else "linear"
    else:
      name = f"BatchNorm_{n_bn}"
      n_bn += 1
      mean = sd[f"{bn}.running_mean"] - (bias if bias is not None else 0)  # fold the Linear's bias
      stats[name] = {"mean": _f32(mean), "var": _f32(sd[f"{bn}.running_var"])}
      origin[("batch_stats", name, "mean")] = f"{prefix}{bn}.running_mean"
      origin[("batch_stats", name, "var")] = f"{prefix}{bn}.running_var"
      affine = f"{bn}.weight" in sd
      if affine:
        params[name] = {"scale": _f32(sd[f"{bn}.weight"]), "bias": _f32(sd[f"{bn}.bias"])}
        origin[("params", name, "scale")] = f"{prefix}{bn}.weight"
        origin[("params", name, "bias")] = f"{prefix}{bn}.bias"
      if last:
        if affine:
          raise OfficialCheckpointError(f"{prefix}{bn}.weight: a last BatchNorm1d with affine parameters; "
                                        "steerjax's 'bn' output has none")
        output = "bn"
      else:
        if not affine:
          raise OfficialCheckpointError(f"missing key {prefix}{bn}.weight (a hidden BatchNorm1d without "
                                        "affine parameters)")
        hidden.append(weight.shape[0])
    pos += 2 if bn is not None else 1
  out_dim = int(params[f"Dense_{n_dense - 1}"]["kernel"].shape[1])
  return (tuple(hidden), out_dim, output), params, stats, origin


def _linear_bn(state_dict: dict, prefix: str, width: int, affine: bool):
  """Linear(·, width, bias=False) at `prefix`0 and BatchNorm1d(width, affine) at `prefix`1:
  (Dense params, BatchNorm params or None, BatchNorm stats)."""
  sd = _sub(state_dict, prefix)
  want = {"0.weight", "1.running_mean", "1.running_var"} | ({"1.weight", "1.bias"} if affine else set())
  layout = f"Linear without bias, BatchNorm1d{'' if affine else ' without affine parameters'}"
  missing, extra = sorted(want - set(sd)), sorted(set(sd) - want)
  if missing:
    raise OfficialCheckpointError(f"missing key {prefix}{missing[0]} (EquiMod's {prefix[:-1]}: {layout})")
  if extra:
    raise OfficialCheckpointError(f"unexpected key {prefix}{extra[0]}: steerers.EquiModPredictor has {layout} here")
  if sd["0.weight"].shape[0] != width:
    raise OfficialCheckpointError(f"{prefix}0.weight has shape {tuple(sd['0.weight'].shape)}, expected "
                                  f"({width}, ·) (the equivariant width, proj_head_eq's output)")
  scale = {"scale": _f32(sd["1.weight"]), "bias": _f32(sd["1.bias"])} if affine else None
  stats = {"mean": _f32(sd["1.running_mean"]), "var": _f32(sd["1.running_var"])}
  return {"kernel": _f32(sd["0.weight"].T)}, scale, stats


def _nest(prefix: str, params: dict, stats: dict, origin: dict, into: dict, origins: dict) -> None:
  into["params"][prefix] = params
  if stats:
    into["batch_stats"][prefix] = stats
  for (collection, *path), key in origin.items():
    origins[(collection, prefix, *path)] = key


def _backbone(state_dict: dict, prefix: str, arch: str, into: dict) -> int:
  """Converts the backbone under `prefix`; returns its feature width."""
  variables = torch_weights.from_torch_state_dict(state_dict, arch, key_prefix=prefix)
  for collection, tree in variables.items():
    into[collection]["encoder"] = tree
  return torch_weights.encoder_for(_sub(state_dict, prefix), arch).feature_dim


def _unexpected(state_dict: dict, prefixes: tuple[str, ...]) -> None:
  extra = sorted(k for k in state_dict if not k.startswith(prefixes))
  if extra:
    raise OfficialCheckpointError(f"unexpected key {extra[0]} (shape {tuple(np.shape(state_dict[extra[0]]))}); "
                                  f"this layout has {', '.join(p + '*' for p in prefixes)}")


def _resnet_arch(state_dict: dict, prefix: str, sie: bool) -> str:
  if f"{prefix}conv1.weight" not in state_dict:
    raise OfficialCheckpointError(f"missing key {prefix}conv1.weight")
  depth = "resnet50" if f"{prefix}layer1.0.conv3.weight" in state_dict else "resnet18"
  if sie:
    return depth + "_sie"
  return depth + ("_cifar" if np.shape(state_dict[f"{prefix}conv1.weight"])[-1] == 3 else "")


def _uniform_hidden(hidden: tuple[int, ...], prefix: str) -> int:
  if len(set(hidden)) > 1:
    raise OfficialCheckpointError(f"{prefix}: hidden widths {hidden} differ; steerjax's heads have one "
                                  "width (head.proj_hidden / head.equi_hidden)")
  return hidden[0] if hidden else 0


def sie(state_dict: dict) -> tuple[dict[str, Any], dict, dict]:
  """(config keys, variables, {flax path: torch key}) of a checkpoint of the official SIE code:
  its SIE (projectors on the two halves of the representation: `methods.sie.SIEModel`) or its
  EquiMod baseline SimCLREquiMod (both projectors on the whole of it: `EquiModPairsModel`)."""
  _unexpected(state_dict, SIE_PREFIXES)
  arch = _resnet_arch(state_dict, "backbone.", sie=True)
  out, origins = {"params": {}, "batch_stats": {}}, {}
  feature_dim = _backbone(state_dict, "backbone.", arch, out)
  width_in = np.shape(state_dict.get("projector_equi.0.weight", np.zeros((0, 0))))[1]
  pairs = width_in == feature_dim  # SimCLREquiMod; SIE's halves otherwise
  names = {"projector_inv": "inv_projector", "projector_equi": "equi_projector", "predictor": "steerer"} \
      if pairs else {"projector_inv": "projector_inv", "projector_equi": "projector_equi", "predictor": "predictor"}
  specs = {}
  for part in ("projector_inv", "projector_equi"):
    spec, params, stats, origin = mlp_head(state_dict, f"{part}.")
    width_in = params["Dense_0"]["kernel"].shape[0]
    if width_in != (feature_dim if pairs else feature_dim // 2):
      raise OfficialCheckpointError(
          f"{origin[('params', 'Dense_0', 'kernel')]} has shape {params['Dense_0']['kernel'].T.shape}, "
          f"expected (·, {feature_dim // 2}): steerjax's SIE splits the {feature_dim}-d representation "
          f"in halves (official --equi {feature_dim // 2}; or (·, {feature_dim}), SimCLREquiMod's)")
    specs[part] = spec
    _nest(names[part], params, stats, origin, out, origins)
  if specs["projector_inv"] != specs["projector_equi"]:
    raise OfficialCheckpointError(f"projector_inv {specs['projector_inv']} and projector_equi "
                                  f"{specs['projector_equi']} differ; steerjax has one head.proj_* for both")
  hidden, dim, output = specs["projector_equi"]
  key = "predictor.hypernet.net.0.weight"
  others = sorted(k for k in state_dict if k.startswith("predictor.") and k != key)
  if others:
    raise OfficialCheckpointError(f"unexpected key {others[0]}: steerjax converts SIE's linear hypernetwork "
                                  "without bias (--hypernetwork linear, no --bias-hypernet, --predictor-type "
                                  "hypernetwork)")
  if key not in state_dict:
    raise OfficialCheckpointError(f"missing key {key}")
  weight = np.asarray(state_dict[key])
  if weight.ndim != 2 or weight.shape[0] != dim * dim or weight.shape[1] not in (4, 6):
    raise OfficialCheckpointError(f"{key} has shape {tuple(weight.shape)}, expected ({dim * dim}, 4) or "
                                  f"({dim * dim}, 6): one {dim}x{dim} map, no --predictor hidden layers or --bias-pred")
  out["params"][names["predictor"]] = {"kernel": _f32(weight.T)}
  origins[("params", names["predictor"], "kernel")] = key
  keys = {"method": "equimod_pairs" if pairs else "sie", "model.name": arch, "model.cifar_stem": False,
          "model.width_multiplier": torch_weights.width_multiplier(_sub(state_dict, "backbone.")),
          "head.proj_layers": len(hidden), "head.proj_hidden": _uniform_hidden(hidden, "projector_equi") or 1,
          "head.proj_dim": dim, "head.proj_output": output, "steerer.name": "hyper_linear",
          "steerer.use_colour": weight.shape[1] == 6}
  return keys, out, origins


def equimod(state_dict: dict) -> tuple[dict[str, Any], dict, dict]:
  """(config keys, variables of `methods.equimod.EquiModModel`, {flax path: torch key}) of an
  official EquiMod checkpoint (SimCLR or BYOL branch)."""
  _unexpected(state_dict, EQUIMOD_PREFIXES)
  arch = _resnet_arch(state_dict, "resnet.", sie=False)
  out, origins = {"params": {}, "batch_stats": {}}, {}
  _backbone(state_dict, "resnet.", arch, out)
  byol = any(k.startswith("predictor_inv.") for k in state_dict)
  name, cifar_stem = torch_weights.ARCHS[arch]
  keys: dict[str, Any] = {"method": "equimod_byol" if byol else "equimod_simclr", "model.name": name,
                          "model.cifar_stem": cifar_stem,
                          "model.width_multiplier": torch_weights.width_multiplier(_sub(state_dict, "resnet."))}
  (hidden, dim, output), params, stats, origin = mlp_head(state_dict, "proj_head_inv.")
  _nest("inv_projector", params, stats, origin, out, origins)
  keys.update({"head.proj_layers": len(hidden), "head.proj_hidden": _uniform_hidden(hidden, "proj_head_inv") or 1,
               "head.proj_dim": dim, "head.proj_output": output})
  if byol:
    spec, params, stats, origin = mlp_head(state_dict, "predictor_inv.")
    if len(spec[0]) != 1 or spec[1:] != (dim, "linear_bias"):
      raise OfficialCheckpointError(f"predictor_inv {spec}: steerjax's BYOL predictor is one hidden layer "
                                    f"and a biased Linear to {dim}")
    _nest("inv_predictor", params, stats, origin, out, origins)
    keys["head.pred_hidden"] = spec[0][0]
  (hidden, equi_dim, output), params, stats, origin = mlp_head(state_dict, "proj_head_eq.")
  if output != "bn":
    raise OfficialCheckpointError("proj_head_eq: steerjax's equivariant head ends in an affine-free BatchNorm1d")
  _nest("equi_head", params, stats, origin, out, origins)
  keys.update({"head.equi_layers": len(hidden), "head.equi_hidden": _uniform_hidden(hidden, "proj_head_eq") or 1,
               "head.equi_dim": equi_dim})
  g_dense, g_scale, g_stats = _linear_bn(state_dict, "proj_head_t.", equi_dim, affine=True)
  y_dense, _, y_stats = _linear_bn(state_dict, "predictor_eq.", equi_dim, affine=False)
  params = {"Dense_0": g_dense, "BatchNorm_0": g_scale, "Dense_1": y_dense}
  stats = {"BatchNorm_0": g_stats, "BatchNorm_1": y_stats}
  origin = {("params", "Dense_0", "kernel"): "proj_head_t.0.weight",
            ("params", "BatchNorm_0", "scale"): "proj_head_t.1.weight",
            ("params", "BatchNorm_0", "bias"): "proj_head_t.1.bias",
            ("batch_stats", "BatchNorm_0", "mean"): "proj_head_t.1.running_mean",
            ("batch_stats", "BatchNorm_0", "var"): "proj_head_t.1.running_var",
            ("params", "Dense_1", "kernel"): "predictor_eq.0.weight",
            ("batch_stats", "BatchNorm_1", "mean"): "predictor_eq.1.running_mean",
            ("batch_stats", "BatchNorm_1", "var"): "predictor_eq.1.running_var"}
  _nest("equi_predictor", params, stats, origin, out, origins)
  return keys, out, origins


def convert(state_dict: dict) -> tuple[dict[str, Any], dict, dict]:
  """`sie` or `equimod` by the checkpoint's keys."""
  found = kind(state_dict)
  if found is None:
    raise OfficialCheckpointError("neither an official SIE checkpoint (backbone.*, projector_equi.*) nor an "
                                  "EquiMod one (resnet.*, proj_head_eq.*)")
  return (sie if found == "sie" else equimod)(state_dict)
