"""Steering error / cosine of the steerer or predictor on held-out images, and γ.

g comes from where the method's training takes it: sampled augmentations of one image
(`transform_source == "augment"`, each example's parameters drawn from its own key, so the
figures do not depend on the chunking or the process count), or two rendered views of one object
drawn as the training loader draws them (`"pairs"`: SIE, EquiMod on pairs). Both stream: only
embeddings are kept.
"""

import jax
import jax.numpy as jnp

from steerjax import augment
from steerjax.evaluators import base
from steerjax.metrics import equivariance


def pairs_compute(ctx: base.Context):
  """compute(variables, index, image, image2, transform) -> z, z_t, z_p for view pairs."""
  fns, size, g_dim = ctx.fns, ctx.image_size, ctx.run.method.g_dim()

  def compute(variables, index, image, image2, transform):
    del index
    embed = lambda x: fns.steer_embed(variables, augment.resize_batch(x, size))
    z = embed(image)
    return {"z": z, "z_t": embed(image2),
            "z_p": fns.steer(variables, z, transform[:, :g_dim].astype(jnp.float32))}
  return compute


def run(ctx: base.Context) -> dict:
  ctx.require_steerer()
  if ctx.run.method.transform_source == "augment":
    compute = ctx.cached("steering_augment", lambda: equivariance.augmented_steering(
        ctx.run.method.policy(), ctx.fns, ctx.image_size, jax.random.PRNGKey(ctx.config.seed + 7)))
    out = ctx.stream_split("val", compute, ctx.variables)
  else:
    pairs, read_rows = ctx.view_pairs("val", ctx.config.eval.max_examples or len(ctx.run.datasets.val))
    out = ctx.stream_compute(read_rows, len(pairs),
                             ctx.cached("steering_pairs", lambda: pairs_compute(ctx)),
                             ctx.variables, device_keys=("image", "image2", "transform"))
  z, z_t, z_p = out["z"], out["z_t"], out["z_p"]
  report = {"steering_error": equivariance.steering_error(z, z_t, z_p),
            "steering_cosine": equivariance.steering_cosine(z_t, z_p),
            "identity_cosine": equivariance.steering_cosine(z_t, z)}
  if "zs" in out:
    report["gamma"] = equivariance.gamma(z, out["zs"], z_t, out["zs_t"])
  return report


EVALUATOR = base.Evaluator("steering", run, section="steering",
                           keys=("steering_error", "steering_cosine", "identity_cosine", "gamma"))
