"""How much the representation keeps of the factors that augmentations and rendering change.

Bhardwaj et al. argue that invariance to augmentations hurts tasks that need sensitivity to
them. The analogue here: a linear (ridge) probe on the frozen features of each factor, train →
val, scored by R² (`metrics.probes.ridge_r2`; one number per factor, the mean over its targets).

- Applied augmentations, `factor_r2_{crop,flip,brightness,contrast,saturation,hue,grayscale}`:
  each of `eval.factor_examples` images per split gets one view of the method's *training* policy (its parameters drawn from
  fold_in(key, example), so nothing depends on the batching); the probe reads the view's
  embedding and regresses the parameters that made it (crop box; jitter factors, which are the
  identity where jitter was not applied; flip and grayscale flags).
- Rendered factors where the dataset has latents (synthetic3d, 3DIEBench),
  `factor_r2_{rotation,floor_hue,light_hue,light_direction}` on the plain images: the object's
  rotation matrix, each hue as (cos, sin) of its angle, the light's unit direction.

The same probes on a randomly initialised encoder (`..._random_init`) are the reference: random
convolutional features keep much colour information, so a trained encoder below its random
reference has learned to discard that factor.
"""

import jax
import jax.numpy as jnp
import numpy as np

from steerjax import augment
from steerjax.data import rotations
from steerjax.evaluators import base
from steerjax.metrics import probes

APPLIED = {"crop": ("top", "left", "height", "width"), "flip": ("flip",),
           "brightness": ("brightness",), "contrast": ("contrast",),
           "saturation": ("saturation",), "hue": ("hue",), "grayscale": ("grayscale",)}


def _augmented(ctx: base.Context):
  """compute(variables, index, image) -> the view's features and its raw parameter vector."""
  policy, fns, size = ctx.run.method.policy(), ctx.fns, ctx.image_size
  key = jax.random.PRNGKey(ctx.config.seed + 11)

  def compute(variables, index, image):
    images = image.astype(jnp.float32) / 255.0
    params = jax.vmap(lambda i: policy.sample(jax.random.fold_in(key, i), images.shape[1:3]))(index)
    views = jax.vmap(lambda im, p: policy.apply(im, p, size))(images, params)
    return {"features": fns.embed(variables, views), "g": augment.raw_vector(params)}
  return compute


def rendered_targets(latent: np.ndarray) -> dict[str, np.ndarray]:
  """synthetic3d / 3DIEBench latents [N, 7] (Euler X, Y, Z; floor hue; light θ, φ; light hue)
  -> {factor: [N, T] regression targets}, continuous (no angle wrap-around)."""
  hue = lambda h: np.stack([np.cos(2 * np.pi * h), np.sin(2 * np.pi * h)], -1)
  theta, phi = latent[:, 4], latent[:, 5]
  return {"rotation": rotations.euler_to_matrix(latent[:, :3]).reshape(len(latent), 9),
          "floor_hue": hue(latent[:, 3]), "light_hue": hue(latent[:, 6]),
          "light_direction": np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi),
                                       np.cos(theta)], -1)}


def _r2(train_x, train_targets, val_x, val_targets, ridge) -> dict[str, float]:
  return {name: float(np.mean(probes.ridge_r2(train_x, train_targets[name], val_x,
                                              val_targets[name], ridge=ridge)))
          for name in train_targets}


def _stream(ctx: base.Context, split: str, compute, variables) -> dict:
  """`compute` over the first `eval.factor_examples` of the split's capped examples."""
  source = getattr(ctx.run.datasets, split)
  rows = ctx.capped_indices(split)[:ctx.config.eval.factor_examples]
  return ctx.stream_compute(lambda r: base.read(source, rows[r]), len(rows), compute, variables)


def run(ctx: base.Context) -> dict:
  e, out = ctx.config.eval, {}
  columns = {name: [augment.ENCODING.index(c) for c in cols] for name, cols in APPLIED.items()}
  compute = ctx.cached("factor_augmented", lambda: _augmented(ctx))
  for suffix, variables, random_init in (("", ctx.variables, False),
                                         ("_random_init", ctx.random_variables, True)):
    views = {split: _stream(ctx, split, compute, variables) for split in ("train", "val")}
    targets = {split: {name: views[split]["g"][:, cols] for name, cols in columns.items()}
               for split in views}
    # A factor the policy never varies (e.g. no grayscale) has nothing to predict.
    varied = [n for n in columns if np.ptp(targets["train"][n], axis=0).max() > 0]
    scores = _r2(views["train"]["features"], {n: targets["train"][n] for n in varied},
                 views["val"]["features"], {n: targets["val"][n] for n in varied}, e.factor_ridge)
    arrays = {split: ctx.split_arrays(split, random_init) for split in ("train", "val")}
    if "latent" in arrays["val"]:
      scores |= _r2(arrays["train"]["features"], rendered_targets(arrays["train"]["latent"]),
                    arrays["val"]["features"], rendered_targets(arrays["val"]["latent"]),
                    e.factor_ridge)
    out |= {f"factor_r2_{name}{suffix}": v for name, v in scores.items()}
  return out


EVALUATOR = base.Evaluator("factor_probe", run, section="representation",
                           keys=("factor_r2_{}", "factor_r2_{}_random_init"),
                           defaults=dict(factor_ridge=1e-2,  # ridge of the standardised probe
                                         factor_examples=2000))  # augmented views per split
