"""Linear-probe top-1 with no TTA, image-space TTA and steered TTA, through `steerjax.tta`.

Both TTA paths see the same N views per image, sampled from the test-time policy
`eval.tta_policy` (not the training policy: strong crops and grayscale lower accuracy when
averaged at test time). Image TTA augments and encodes all views inside one jitted function;
steered TTA embeds the plain image once and applies ρ(g_n), through the basis/combine path
when the steerer is linear in g. g is encoded with the *training* policy's standardisation,
which is what the steerer learned.

Times (`tta_{image,steered}_ms_per_image`, and their ratio `tta_speedup`) are measured on the
same images in the same run, compilation excluded: image TTA is N encoder passes, steered TTA
one encoder pass plus N steerer products.
"""

import functools
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from steerjax import augment
from steerjax import tta
from steerjax.evaluators import base
from steerjax.evaluators import report as report_lib
from steerjax.metrics import probes


def applies(ctx: base.Context) -> None:
  if not ctx.run.method.steers_representation or ctx.fns.steer is None:
    raise base.NotApplicable(f"method {ctx.config.method} does not steer the representation "
                             "the probe reads")


def view_fns(ctx: base.Context, num_views: int) -> dict[str, Callable]:
  """The programs that give each mode's N views: {program: fn((variables, head), images_uint8
  [B,H,W,3], keys [B,2]) -> {mode: {"probs": [B, N, C], "features": [B, N, d]}}}.

  "steered" gives modes "none" (N = 1, the plain embedding) and "steered" (one encoder pass, N
  steerer products); "image" gives mode "image" (N encoder passes). They are separate programs
  so that each one's time is measured on its own. Without a steerer only "none" exists.
  """
  method, fns, size = ctx.run.method, ctx.fns, ctx.image_size
  policy = augment.get_policy(ctx.config.eval.tta_policy.to_dict())
  encode = method.policy().encode
  if fns.steer_basis is not None:
    steerer = lambda v: dict(basis_fn=functools.partial(fns.steer_basis, v),
                             combine_fn=functools.partial(fns.steer_combine, v))
  else:
    steerer = lambda v: dict(steer_fn=functools.partial(fns.steer, v))
  steers = method.steers_representation and fns.steer is not None
  chunk = ctx.config.eval.batch_size  # views per encoder call (fewer when B·N is: no padding)

  def mode(head, features):
    return {"probs": tta.view_probs(lambda z: probes.probe_logits(head, z), features),
            "features": features}

  def params_of(images_uint8, keys):
    sample = lambda k: jax.vmap(lambda kk: policy.sample(kk, images_uint8.shape[1:3]))(
        jax.random.split(k, num_views))
    return jax.vmap(sample)(keys)  # leaves [B, N, ...]

  def steered(state, images_uint8, keys):
    variables, head = state
    z = fns.embed(variables, augment.resize_batch(images_uint8, size))
    out = {"none": mode(head, z[:, None])}
    if steers:
      params = params_of(images_uint8, keys)
      flat = jax.tree.map(lambda p: p.reshape(-1, *p.shape[2:]), params)
      g = encode(flat).reshape(*keys.shape[:1], num_views, -1)
      out["steered"] = mode(head, tta.steered_views(z, g, **steerer(variables)))
    return out

  def image(state, images_uint8, keys):
    variables, head = state
    floats = images_uint8.astype(jnp.float32) / 255.0
    views = tta.image_views(functools.partial(fns.embed, variables), floats,
                            lambda im, p: policy.apply(im, p, size), params_of(images_uint8, keys),
                            batch_size=min(chunk, len(keys) * num_views))
    return {"image": mode(head, views)}

  return {"steered": steered, "image": image} if steers else {"steered": steered}


def views(ctx: base.Context, images_uint8: np.ndarray) -> tuple[dict, dict[str, float]]:
  """Every mode's N views of the images, and the seconds each program ran (compilation
  excluded): ({mode: {"probs": [B, N, C], "features": [B, N, d]}}, {program: seconds})."""
  n = ctx.config.eval.tta_views
  programs = ctx.cached(("tta_fns", n), lambda: view_fns(ctx, n))
  keys = np.asarray(jax.random.split(jax.random.PRNGKey(ctx.config.seed + 1000), len(images_uint8)))
  out, seconds = {}, {}
  for name, fn in programs.items():
    result, seconds[name] = ctx.timed_batched(fn, (ctx.variables, ctx.probe()["head"]),
                                              images_uint8, keys)
    out.update(result)
  return out, seconds


def val_views(ctx: base.Context) -> tuple[dict, dict[str, float], np.ndarray]:
  """`views` of the first `eval.tta_examples` val images and their labels, computed once per
  context: the tta and ood evaluators share them. (views, seconds, labels)."""
  def make():
    val = ctx.subset("val", ctx.config.eval.tta_examples)
    return (*views(ctx, val["image"]), val["label"])
  return ctx.cached("tta_val_views", make)


def view_probabilities(ctx: base.Context, images_uint8: np.ndarray) -> dict[str, np.ndarray]:
  """{mode: per-view class probabilities [B, N, C]} for no TTA (N = 1), image and steered TTA."""
  return {m: v["probs"] for m, v in views(ctx, images_uint8)[0].items()}


def view_counts(total: int) -> list[int]:
  """The numbers of views a curve over N is drawn at: 1, 2, 4, ... and N itself."""
  return sorted({*(2**i for i in range(total.bit_length())), total})


def accuracy_by_views(probs: dict[str, np.ndarray], labels: np.ndarray) -> tuple[list, dict]:
  """Top-1 of the mean over the first n views, n = 1, 2, 4, ... and N: (the n, {mode: top-1
  at each n}); no TTA (one view) is the same at every n."""
  views = view_counts(max(p.shape[1] for p in probs.values()))
  return views, {mode: [float(np.mean(p[:, :n].mean(1).argmax(-1) == labels)) for n in views]
                 for mode, p in probs.items()}


def run(ctx: base.Context) -> dict:
  applies(ctx)
  out, seconds, labels = val_views(ctx)
  probs = {m: v["probs"] for m, v in out.items()}
  num_views, curves = accuracy_by_views(probs, labels)
  if jax.process_index() == 0:
    report_lib.line_plot(os.path.join(ctx.workdir, PLOT), num_views, curves, log2_x=True,
                     xlabel="views N", ylabel="linear-probe top-1",
                     title=f"TTA accuracy by number of views ({len(labels)} val images)")
  ms = {f"tta_{name}_ms_per_image": 1e3 * s / len(labels) for name, s in seconds.items()}
  return ({f"tta_{mode}_top1": curve[-1] for mode, curve in curves.items()} | ms |
          {"tta_speedup": seconds["image"] / seconds["steered"]})


PLOT = "tta_views.png"
EVALUATOR = base.Evaluator(
    "tta", run, section="tta", keys=("tta_none_top1", "tta_image_top1", "tta_steered_top1", "tta_image_ms_per_image",
                       "tta_steered_ms_per_image", "tta_speedup"),
    plots=(PLOT,),
    defaults=dict(
        tta_views=8, tta_examples=256,  # TTA and OOD use this many held-out images
        # Test-time policy (an augment config: base policy + overrides): flips, mild crops and
        # colour, so that averaging views helps instead of hurting as strong training crops do.
        tta_policy=dict(base="none", crop_scale=(0.6, 1.0), crop_ratio=(3 / 4, 4 / 3), flip_p=0.5,
                        jitter=(0.2, 0.2, 0.2, 0.02), jitter_p=0.5, grayscale_p=0.0)))
