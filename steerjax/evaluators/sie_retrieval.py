"""SIE's MRR / H@k and PRE of the predictor on held-out objects.

Also the MRR of a randomly initialised model: with V views per object, chance is far from 0
(about (1/V) Σ_r 1/r), so the trained figure means little without it.
"""

import jax.numpy as jnp
import numpy as np

from steerjax import augment
from steerjax.data import rotations
from steerjax.evaluators import base
from steerjax.metrics import equivariance


def _view_table(val: dict) -> np.ndarray:
  """[objects, views] indices into the capped val split, whole objects only."""
  ids, counts = np.unique(val["object_id"], return_counts=True)
  whole = np.isin(val["object_id"], ids[counts == counts.max()])
  order = np.lexsort((val["view_id"], val["object_id"]))
  order = order[whole[order]]
  return order.reshape(-1, counts.max())


def run(ctx: base.Context) -> dict:
  method, fns = ctx.run.method, ctx.fns
  if method.transform_source != "pairs":
    raise base.NotApplicable(f"method {ctx.config.method} is not conditioned on rendered transformations")
  size, steer_embed = ctx.image_size, fns.steer_embed
  compute = ctx.cached("sie_embed", lambda: lambda v, index, image: {
      "z": steer_embed(v, augment.resize_batch(image, size))})
  embeddings = lambda variables: ctx.stream_split("val", compute, variables)
  val = embeddings(ctx.variables)  # the embeddings plus object_id, view_id, latent
  if "object_id" not in val:
    raise base.NotApplicable("the val split has no objects with several views")
  table = _view_table(val)
  latent = val["latent"][table]  # [O, V, 7]
  g = rotations.relative_transform(np.repeat(latent[:, :1], latent.shape[1], 1), latent,
                                   ctx.config.data.quaternion_sign)
  g = g[..., : method.g_dim()].astype(np.float32)
  out = {}
  for prefix, variables in (("sie", ctx.variables), ("sie_random_init", ctx.random_variables)):
    z = (val if prefix == "sie" else embeddings(variables))["z"][table]
    predict = lambda z_, g_, v=variables: ctx.batched(fns.steer, v, np.asarray(z_), np.asarray(g_))
    scores = equivariance.sie_retrieval(jnp.asarray(z), jnp.asarray(g), predict)
    if prefix == "sie":
      flat_z, flat_g = z.reshape(-1, z.shape[-1]), g.reshape(-1, g.shape[-1])
      pred = predict(np.repeat(z[:, 0], z.shape[1], 0), flat_g)
      pose = rotations.matrix_to_quaternion(rotations.euler_to_matrix(latent[..., :3])).reshape(-1, 4)
      scores["pre"] = equivariance.pre(pred, pose, flat_z, pose)
    else:
      scores = {"mrr": scores["mrr"]}
    out.update({f"{prefix}_{k.replace('@', '')}": v for k, v in scores.items()})
  return out


EVALUATOR = base.Evaluator("sie_retrieval", run, section="SIE retrieval",
                           keys=("sie_mrr", "sie_h{}", "sie_pre", "sie_random_init_mrr"))
