"""Per-layer learned equivariance: Bruintjes et al.'s correlation and Gruver et al.'s LEE."""

import os

import jax
import jax.numpy as jnp

from steerjax.evaluators import base
from steerjax.metrics import learned_equivariance


def run(ctx: base.Context) -> dict:
  encoder = ctx.run.method.build_model().encoder
  variables = {c: v["encoder"] for c, v in ctx.variables.items() if "encoder" in v}
  sown = learned_equivariance.sown_features_fn(encoder, variables)
  depth_order = list(encoder.strides) + ["output"]  # input to output, as the plot reads

  def features_fn(x):
    feats = sown(x)
    return {k: feats[k] for k in depth_order}

  images = jnp.asarray(ctx.floats(ctx.subset("val", ctx.config.eval.equivariance_examples)["image"]))
  results = {"correlation": learned_equivariance.correlation_equivariance(
      jax.jit(features_fn), images, encoder.strides)}
  results["lie_derivative"] = {g: learned_equivariance.layer_lie_derivatives(
      features_fn, images, encoder.strides, g) for g in ("translate_x", "rotate")}
  # Jitted functions return dicts in sorted-key order; the plot reads input to output.
  results = {k: {fam: {n: layers[n] for n in depth_order + ["overall"] if n in layers}
                 for fam, layers in v.items()} for k, v in results.items()}
  if jax.process_index() == 0:
    learned_equivariance.plot_layer_equivariance(
        results, os.path.join(ctx.workdir, "layer_equivariance.png"))
  out = {f"equiv_corr_{t}_{layer}": v for t, layers in results["correlation"].items()
         for layer, v in layers.items()}
  out.update({f"lee_{g}_{layer}": v for g, layers in results["lie_derivative"].items()
              for layer, v in layers.items()})
  return out


EVALUATOR = base.Evaluator("learned_equivariance", run, section="learned equivariance",
                           keys=("equiv_corr_{}_{}", "lee_{}_{}"),
                           defaults=dict(equivariance_examples=64))
