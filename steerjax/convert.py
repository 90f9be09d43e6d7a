"""Encoder weights between PyTorch (torchvision layout) and steerjax.

  python -m steerjax.convert --from-torch FILE --arch resnet50 --out DIR
  python -m steerjax.convert --to-torch WORKDIR --out FILE

FILE is a `.pt`/`.pth` (needs torch; the state dict may be nested under `model` or
`state_dict`, DDP's `module.` prefix is stripped), a `.safetensors` or a `.npz`
(read with NumPy alone). DIR receives `encoder.msgpack` (Flax variables) and
`encoder.json` (arch and width); `load_converted(DIR)` gives (module, variables).
`--to-torch` writes the online encoder of WORKDIR's latest checkpoint.
"""

import argparse
import json
import os
import sys

import numpy as np
import safetensors
import safetensors.numpy

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
  from steerjax.models import resnet  # pylint: disable=g-import-not-at-top
  with open(os.path.join(out_dir, "encoder.json")) as f:
    meta = json.load(f)
  name, cifar_stem = torch_weights.ARCHS[meta["arch"]]
  with open(os.path.join(out_dir, "encoder.msgpack"), "rb") as f:
    variables = serialization.msgpack_restore(f.read())
  return resnet.get_encoder(name, meta["width_multiplier"], cifar_stem), variables


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


def main(argv=None) -> None:
  p = argparse.ArgumentParser(prog="python -m steerjax.convert", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  g = p.add_mutually_exclusive_group(required=True)
  g.add_argument("--from-torch", metavar="FILE")
  g.add_argument("--to-torch", metavar="WORKDIR")
  p.add_argument("--arch", help=f"with --from-torch: one of {', '.join(torch_weights.ARCHS)}")
  p.add_argument("--out", required=True)
  args = p.parse_args(argv)
  try:
    if args.from_torch:
      if not args.arch:
        raise ConvertError(f"--arch is required with --from-torch; known: {', '.join(torch_weights.ARCHS)}")
      sd = read_state_dict(args.from_torch)
      variables = torch_weights.from_torch_state_dict(sd, args.arch)
      save_converted(args.out, args.arch, torch_weights.width_multiplier(sd), variables)
      print(f"wrote {args.out}/encoder.msgpack ({args.arch}, width x{torch_weights.width_multiplier(sd):g})")
    else:
      arch, variables = workdir_encoder(args.to_torch)
      write_state_dict(args.out, torch_weights.to_torch_state_dict(variables, arch))
      print(f"wrote {args.out} (torchvision {arch} backbone, no fc)")
  except (ConvertError, torch_weights.StateDictError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  main()
