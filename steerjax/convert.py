"""Encoder weights between PyTorch (torchvision layout) and steerjax.

  python -m steerjax.convert --from-torch FILE --arch resnet50 --out DIR
  python -m steerjax.convert --from-torch model.pth --config CONFIG [--config.KEY=VALUE ...] --out WORKDIR
  python -m steerjax.convert --to-torch WORKDIR --out FILE

FILE is a `.pt`/`.pth` (needs torch; the state dict may be nested under `model` or
`state_dict`, DDP's `module.` prefix is stripped), a `.safetensors` or a `.npz`
(read with NumPy alone). DIR receives `encoder.msgpack` (Flax variables) and
`encoder.json` (arch and width); `load_converted(DIR)` gives (module, variables). Archs
`resnet18_sie`/`resnet50_sie` are the official SIE code's ResNet (its final_weights.pth).

A whole official SIE or EquiMod checkpoint (backbone *and* heads: SIE's projectors and linear
hypernetwork predictor, also for its SimCLREquiMod baseline; EquiMod's projector, equivariant head
and predictor; layouts and the
mapping in `steerjax.models.official_heads`) is recognised by its keys and becomes a steerjax
workdir with `--config` (e.g. configs/sie_3diebench.py, which says the data): the config gets the
checkpoint's architecture keys (printed, and recorded as overrides), the workdir one finished
checkpoint, so `python -m steerjax.main --config CONFIG --workdir WORKDIR --eval_only [the
printed overrides]` or `steerjax.api.load_run(WORKDIR).evaluate()` scores it (SIE: MRR, H@k,
PRE with `sie_retrieval`). SIE's official g is not sign-canonical: convert with
`--config.data.quaternion_sign=official` to evaluate its predictor on the inputs it was trained on.
`--to-torch` writes the online encoder of WORKDIR's latest checkpoint.
"""

import argparse
import json
import os
import shlex
import sys
from typing import Any

import numpy as np
import safetensors
import safetensors.numpy

from steerjax.models import official_heads
from steerjax.models import torch_weights

_NESTED_KEYS = ("state_dict", "model")


class ConvertError(ValueError):
  """A file or argument cannot be converted; the message says why."""


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """A .safetensors file as NumPy arrays (the safetensors package; no torch needed)."""
  try:
    return safetensors.numpy.load_file(path)
  except (safetensors.SafetensorError, TypeError, ValueError) as e:  # corrupt file, or a dtype NumPy lacks
    raise ConvertError(f"{path}: not a readable .safetensors file of NumPy dtypes ({e})") from None


def write_safetensors(path: str, arrays: dict[str, np.ndarray]) -> None:
  safetensors.numpy.save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, path)


def _unnest(obj) -> dict:
  for key in _NESTED_KEYS:
    if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
      obj = obj[key]
  if all(k.startswith("module.") for k in obj):
    obj = {k[len("module."):]: v for k, v in obj.items()}
  return obj


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """The torchvision-layout state dict in `path` as NumPy arrays."""
  if not os.path.exists(path):
    raise ConvertError(f"--from-torch {path}: no such file")
  if path.endswith(".safetensors"):
    return read_safetensors(path)
  if path.endswith(".npz"):
    with np.load(path) as f:
      return _unnest({k: f[k] for k in f.files})
  if path.endswith((".pt", ".pth", ".bin", ".ckpt")):
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise ConvertError(f"--from-torch {path}: reading .pt/.pth needs torch (pip install torch), "
                         "or save it as .safetensors/.npz") from None
    obj = _unnest(torch.load(path, map_location="cpu", weights_only=True))
    return {k: v.detach().cpu().numpy() for k, v in obj.items() if hasattr(v, "detach")}
  raise ConvertError(f"--from-torch {path}: unknown extension; use .pt, .pth, .safetensors or .npz")


def save_converted(out_dir: str, arch: str, width_multiplier: float, variables: dict) -> None:
  from flax import serialization  # pylint: disable=g-import-not-at-top
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "encoder.msgpack"), "wb") as f:
    f.write(serialization.msgpack_serialize(variables))
  with open(os.path.join(out_dir, "encoder.json"), "w") as f:
    json.dump({"arch": arch, "width_multiplier": width_multiplier}, f)


def load_converted(out_dir: str):
  """(encoder module, Flax variables) of a directory written by `--from-torch`."""
  from flax import serialization  # pylint: disable=g-import-not-at-top
  from steerjax.models import encoders  # pylint: disable=g-import-not-at-top
  with open(os.path.join(out_dir, "encoder.json")) as f:
    meta = json.load(f)
  name, cifar_stem = torch_weights.ARCHS[meta["arch"]]
  with open(os.path.join(out_dir, "encoder.msgpack"), "rb") as f:
    variables = serialization.msgpack_restore(f.read())
  return encoders.get_encoder(name, meta["width_multiplier"], cifar_stem), variables


def workdir_encoder(workdir: str):
  """(torch arch name, encoder variables) of the latest checkpoint in a steerjax workdir."""
  from steerjax import api  # pylint: disable=g-import-not-at-top
  if not os.path.exists(os.path.join(workdir, "config.json")):
    raise ConvertError(f"--to-torch {workdir}: no config.json (not a steerjax workdir)")
  run = api.load_run(workdir)
  arch = run.config.model.name + ("_cifar" if run.config.model.cifar_stem else "")
  return arch, run.encoder_variables


def write_state_dict(path: str, state_dict: dict[str, np.ndarray]) -> None:
  if path.endswith(".safetensors"):
    write_safetensors(path, state_dict)
  elif path.endswith(".npz"):
    np.savez(path, **state_dict)
  elif path.endswith((".pt", ".pth")):
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise ConvertError(f"--out {path}: writing .pt/.pth needs torch; use .safetensors or .npz") from None
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()}, path)
  else:
    raise ConvertError(f"--out {path}: unknown extension; use .pt, .pth, .safetensors or .npz")


def _override(key: str, value) -> str:
  return f"--config.{key}={value}"  # strings unquoted: `main.apply_overrides` takes them as they are


def _paths(tree: dict, prefix: tuple = ()) -> dict[tuple, Any]:
  out = {}
  for k, v in tree.items():
    out.update(_paths(v, prefix + (k,)) if isinstance(v, dict) else {prefix + (k,): v})
  return out


def write_workdir(state_dict: dict, spec: str, overrides: list[str], workdir: str) -> list[str]:
  """An official SIE/EquiMod checkpoint as a steerjax workdir with one finished checkpoint, on
  the config `spec` + `overrides` + the checkpoint's architecture keys; returns all overrides."""
  import jax  # pylint: disable=g-import-not-at-top
  from steerjax import checkpoint, main as main_lib, train  # pylint: disable=g-import-not-at-top
  keys, converted, origins = official_heads.convert(state_dict)
  for o in overrides:
    key = o.partition("=")[0][len("--config."):]
    if key in keys:
      raise ConvertError(f"{o}: the checkpoint sets config.{key} ({keys[key]!r}); leave it out")
  overrides = overrides + [_override(k, v) for k, v in keys.items()]
  cfg = main_lib.load_config(spec)
  main_lib.apply_overrides(cfg, overrides)
  record, _ = main_lib.accept(cfg, spec, overrides, workdir, jax.device_count())
  if os.path.exists(os.path.join(workdir, "checkpoints")):
    raise ConvertError(f"--out {workdir} already holds checkpoints; pass a new folder")
  _, method, _, _, tx, _, state, mesh, _ = train.setup(cfg, abstract_state=True)
  got = {("params",) + p: v for p, v in _paths(converted["params"]).items()}
  got.update({("batch_stats",) + p: v for p, v in _paths(converted["batch_stats"]).items()})
  want = {("params",) + p: v for p, v in _paths(state.params).items()}
  want.update({("batch_stats",) + p: v for p, v in _paths(state.batch_stats).items()})
  for path, leaf in want.items():
    torch_key = origins.get(path, "the backbone")
    if path not in got:
      raise ConvertError(f"steerjax's {cfg.method} model has {'/'.join(path)} {tuple(leaf.shape)}, which the "
                         "checkpoint lacks")
    if tuple(got[path].shape) != tuple(leaf.shape):
      shape = got[path].shape[::-1] if path[-1] == "kernel" and got[path].ndim == 2 else got[path].shape
      expected = leaf.shape[::-1] if path[-1] == "kernel" and leaf.ndim == 2 else leaf.shape
      raise ConvertError(f"{torch_key} has shape {tuple(shape)}, expected {tuple(expected)} for "
                         f"{'/'.join(path)} of steerjax's {cfg.method} on this config")
  for path in got.keys() - want.keys():
    raise ConvertError(f"{origins.get(path, '/'.join(path))}: steerjax's {cfg.method} model has no "
                       f"{'/'.join(path)}")
  params, stats = converted["params"], converted["batch_stats"]
  target = method.uses_target
  state = train.TrainState(step=np.asarray(cfg.total_steps, np.int32), params=params, batch_stats=stats,
                           opt_state=tx.init(params), target_params=params if target else None,
                           target_batch_stats=stats if target else None, rng=jax.random.PRNGKey(cfg.seed))
  state = jax.device_put(state, train.replicated(mesh))
  lock = main_lib.start(workdir, record, {})
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), cfg.checkpoint_every,
                                 cfg.keep_checkpoints)
  ckpt.save(cfg.total_steps, state, force=True)
  ckpt.close()
  lock.close()
  return overrides


def main(argv=None) -> None:
  p = argparse.ArgumentParser(prog="python -m steerjax.convert", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  g = p.add_mutually_exclusive_group(required=True)
  g.add_argument("--from-torch", metavar="FILE")
  g.add_argument("--to-torch", metavar="WORKDIR")
  p.add_argument("--arch", help=f"with --from-torch: one of {', '.join(torch_weights.ARCHS)}")
  p.add_argument("--config", help="with --from-torch of an official SIE/EquiMod checkpoint: the config "
                                  "of the workdir written to --out (plus --config.KEY=VALUE overrides)")
  p.add_argument("--out", required=True)
  args, rest = p.parse_known_args(argv)
  overrides = [a for a in rest if a.startswith("--config.")]
  if len(overrides) < len(rest):
    p.error(f"unrecognized arguments: {' '.join(a for a in rest if a not in overrides)}")
  from steerjax import config as config_lib, workdir_lock  # pylint: disable=g-import-not-at-top
  try:
    if args.from_torch:
      sd = read_state_dict(args.from_torch)
      heads = official_heads.kind(sd)
      if heads and not args.config:
        raise ConvertError(f"--from-torch {args.from_torch} is an official {heads} checkpoint with heads: pass "
                           "--config CONFIG (e.g. configs/sie_3diebench.py) to write a workdir, or convert "
                           "a backbone-only file (SIE's final_weights.pth) with --arch")
      if args.config:
        if not heads:
          raise ConvertError(f"--config writes a workdir from an official SIE/EquiMod checkpoint; "
                             f"{args.from_torch} has neither layout (a bare backbone: use --arch)")
        if args.arch:
          raise ConvertError("--arch is read from the checkpoint with --config; leave it out")
        overrides = write_workdir(sd, args.config, overrides, args.out)
        print(f"wrote {args.out} (official {heads} checkpoint, step of a finished run); evaluate with\n"
              f"  python -m steerjax.main --config {args.config} --workdir {args.out} --eval_only "
              + " ".join(shlex.quote(o) for o in overrides))
        return
      if overrides:
        raise ConvertError(f"{overrides[0]}: --config.KEY=VALUE needs --config")
      if not args.arch:
        raise ConvertError(f"--arch is required with --from-torch; known: {', '.join(torch_weights.ARCHS)}")
      variables = torch_weights.from_torch_state_dict(sd, args.arch)
      save_converted(args.out, args.arch, torch_weights.width_multiplier(sd), variables)
      print(f"wrote {args.out}/encoder.msgpack ({args.arch}, width x{torch_weights.width_multiplier(sd):g})")
    else:
      arch, variables = workdir_encoder(args.to_torch)
      write_state_dict(args.out, torch_weights.to_torch_state_dict(variables, arch))
      print(f"wrote {args.out} (torchvision {arch} backbone, no fc)")
  except (ConvertError, torch_weights.StateDictError, config_lib.ConfigError, workdir_lock.LockedError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  main()
