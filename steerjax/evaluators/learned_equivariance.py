"""Per-layer learned equivariance: Bruintjes et al.'s correlation and Gruver et al.'s LEE."""

import os

import jax
import jax.numpy as jnp

from steerjax.evaluators import base
from steerjax.metrics import learned_equivariance


def run(ctx: base.Context) -> dict:
  encoder = ctx.run.method.build_model().encoder
  variables = {c: v["encoder"] for c, v in ctx.variables.items() if "encoder" in v}
  images = jnp.asarray(ctx.floats(ctx.subset("val", ctx.config.eval.equivariance_examples)["image"]))
  plot = os.path.join(ctx.workdir, PLOT) if jax.process_index() == 0 else None
  results = learned_equivariance.measure(encoder, variables, images, plot=plot)
  out = {f"equiv_corr_{t}_{layer}": v for t, layers in results["correlation"].items()
         for layer, v in layers.items()}
  out.update({f"lee_{g}_{layer}": v for g, layers in results["lie_derivative"].items()
              for layer, v in layers.items()})
  return out


PLOT = "layer_equivariance.png"
EVALUATOR = base.Evaluator("learned_equivariance", run, section="learned equivariance",
                           keys=("equiv_corr_{}_{}", "lee_{}_{}"), plots=(PLOT,),
                           defaults=dict(equivariance_examples=64))
