"""Steering error / cosine of the steerer or predictor on held-out images, and γ.

g comes from where the method's training takes it: sampled augmentations of one image
(`transform_source == "augment"`), or two rendered views of one object drawn as the training
loader draws them (`"pairs"`: SIE, EquiMod on pairs).
"""

import jax
import jax.numpy as jnp
import numpy as np

from steerjax import augment
from steerjax.evaluators import base
from steerjax.metrics import equivariance


def run(ctx: base.Context) -> dict:
  ctx.require_steerer()
  method, fns = ctx.run.method, ctx.fns
  source_shifted = target_shifted = None
  if method.transform_source == "augment":
    val = ctx.images("val")
    key = jax.random.PRNGKey(ctx.config.seed + 7)
    views, g, params = augment.augment_batch_with_params(method.policy(), key, jnp.asarray(val["image"]),
                                                         ctx.image_size)
    source, target = ctx.floats(val["image"]), np.asarray(views)
    # γ needs one augmentation applied to two different images: reuse each view's
    # parameters on the next image of the batch.
    shifted = np.roll(val["image"], 1, axis=0)
    apply = jax.jit(jax.vmap(lambda im, p: method.policy().apply(
        im.astype(jnp.float32) / 255.0, p, ctx.image_size)))
    target_shifted = np.asarray(apply(jnp.asarray(shifted), params))
    source_shifted = ctx.floats(shifted)
  else:
    pairs = ctx.view_pairs("val", ctx.config.eval.max_examples or len(ctx.run.datasets.val))
    source, target = ctx.floats(pairs["image"]), ctx.floats(pairs["image2"])
    g = pairs["transform"][:, : method.g_dim()]
  g = np.asarray(g, np.float32)
  z = ctx.batched(fns.steer_embed, ctx.variables, source)
  z_t = ctx.batched(fns.steer_embed, ctx.variables, target)
  z_p = ctx.batched(fns.steer, ctx.variables, z, g)
  out = {"steering_error": equivariance.steering_error(z, z_t, z_p),
         "steering_cosine": equivariance.steering_cosine(z_t, z_p),
         "identity_cosine": equivariance.steering_cosine(z_t, z)}
  if source_shifted is not None:
    zs = ctx.batched(fns.steer_embed, ctx.variables, source_shifted)
    zs_t = ctx.batched(fns.steer_embed, ctx.variables, target_shifted)
    out["gamma"] = equivariance.gamma(z, zs, z_t, zs_t)
  return out


EVALUATOR = base.Evaluator("steering", run, section="steering",
                           keys=("steering_error", "steering_cosine", "identity_cosine", "gamma"))
