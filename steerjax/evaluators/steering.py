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


def augment_compute(ctx: base.Context):
  """compute(variables, index, image) -> the embeddings steering and γ need, for one chunk."""
  policy, fns, size = ctx.run.method.policy(), ctx.fns, ctx.image_size
  key = jax.random.PRNGKey(ctx.config.seed + 7)

  def compute(variables, index, image):
    images = image.astype(jnp.float32) / 255.0
    params = jax.vmap(lambda i: policy.sample(jax.random.fold_in(key, i), images.shape[1:3]))(index)
    apply = jax.vmap(lambda im, p: policy.apply(im, p, size))
    embed = lambda x: fns.steer_embed(variables, x)
    z = embed(augment.resize_batch(image, size))
    z_t = embed(apply(images, params))
    # γ needs one augmentation applied to two different images: each view's parameters are
    # reused on the previous image of the chunk.
    shifted = jnp.roll(images, 1, axis=0)
    return {"z": z, "z_t": z_t, "z_p": fns.steer(variables, z, policy.encode(params)),
            "zs": jnp.roll(z, 1, axis=0), "zs_t": embed(apply(shifted, params))}
  return compute


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
    source = ctx.run.datasets.val
    rows = ctx.capped_indices("val")
    out = ctx.stream_compute(lambda r: base.read(source, rows[r]), len(rows),
                             ctx.cached("steering_augment", lambda: augment_compute(ctx)),
                             ctx.variables)
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
