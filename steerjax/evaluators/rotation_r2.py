"""R² of the relative rotation regressed from a pair of embeddings (train pairs → val pairs)."""

import numpy as np

from steerjax.data import rotations
from steerjax.evaluators import base
from steerjax.metrics import equivariance


def _partner_view(object_id: np.ndarray, anchors: np.ndarray, rng) -> np.ndarray:
  """For each anchor index, a random index of a *different* view of the same object."""
  by_object = {int(obj): np.flatnonzero(object_id == obj) for obj in np.unique(object_id)}
  partners = []
  for i in anchors:
    choices = by_object[int(object_id[i])]
    choices = choices[choices != i] if len(choices) > 1 else choices
    partners.append(rng.choice(choices))
  return np.asarray(partners)


def run(ctx: base.Context) -> dict:
  if "latent" not in ctx.split_arrays("val"):
    raise base.NotApplicable("the dataset has no rendered latents (rotation, lighting)")
  e, rng = ctx.config.eval, np.random.default_rng(ctx.config.seed)
  data = {}
  for split in ("train", "val"):
    arrays = ctx.split_arrays(split)
    feats = arrays["features"]
    a, b = rng.permutation(len(feats)), rng.permutation(len(feats))
    # Two views of the same object where the split has several, else any two images.
    if "object_id" in arrays:
      b = _partner_view(arrays["object_id"], a, rng)
    y = rotations.relative_quaternion(arrays["latent"][a], arrays["latent"][b],
                                      ctx.config.data.quaternion_sign)
    data[split] = feats[a], feats[b], y
  out = {}
  for part, sl in (("all", slice(None)),) + ctx.run.method.representation_parts:
    (ta, tb, ty), (va, vb, vy) = data["train"], data["val"]
    out[f"rotation_r2_{part}"] = equivariance.regress_r2(
        ta[:, sl], tb[:, sl], ty, va[:, sl], vb[:, sl], vy, hidden=(e.r2_hidden, e.r2_hidden),
        steps=e.r2_steps, seed=ctx.config.seed)
  return out


EVALUATOR = base.Evaluator(
    "rotation_r2", run, section="learned equivariance", keys=("rotation_r2_{}",),
    defaults=dict(r2_hidden=256, r2_steps=500))  # relative-rotation regressor (SIE uses 1024 wide)
