"""Linear-probe top-1 with no TTA, image-space TTA and steered TTA, through `steerjax.tta`.

Both TTA paths see the same N views per image, sampled from the test-time policy
`eval.tta_policy` (not the training policy: strong crops and grayscale lower accuracy when
averaged at test time). Image TTA augments and encodes all views inside one jitted function;
steered TTA embeds the plain image once and applies ρ(g_n), through the basis/combine path
when the steerer is linear in g. g is encoded with the *training* policy's standardisation,
which is what the steerer learned.
"""

import functools
import os

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


def view_fn(ctx: base.Context, num_views: int):
  """`fn((variables, head), images_uint8 [B,H,W,3], keys [B,2]) -> {mode: probs [B, N, C]}`;
  mode "none" has N = 1, and "image"/"steered" appear where steered TTA applies."""
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

  def fn(state, images_uint8, keys):
    variables, head = state
    head_fn = lambda z: probes.probe_logits(head, z)
    embed = functools.partial(fns.embed, variables)
    z = embed(augment.resize_batch(images_uint8, size))
    out = {"none": jax.nn.softmax(head_fn(z), -1)[:, None]}
    if not steers:
      return out
    floats = images_uint8.astype(jnp.float32) / 255.0
    sample = lambda k: jax.vmap(lambda kk: policy.sample(kk, floats.shape[1:3]))(
        jax.random.split(k, num_views))
    params = jax.vmap(sample)(keys)  # leaves [B, N, ...]
    flat = jax.tree.map(lambda p: p.reshape(-1, *p.shape[2:]), params)
    g = encode(flat).reshape(*keys.shape[:1], num_views, -1)
    out["image"] = tta.image_tta_views(embed, head_fn, floats, lambda im, p: policy.apply(im, p, size),
                                       params, batch_size=min(chunk, len(keys) * num_views))
    out["steered"] = tta.steered_tta_views(head_fn, z, g, **steerer(variables))
    return out

  return fn


def view_probabilities(ctx: base.Context, images_uint8: np.ndarray) -> dict[str, np.ndarray]:
  """{mode: per-view class probabilities [B, N, C]} for no TTA (N = 1), image and steered TTA."""
  n = ctx.config.eval.tta_views
  fn = ctx.cached(("tta_fn", n), lambda: view_fn(ctx, n))
  keys = np.asarray(jax.random.split(jax.random.PRNGKey(ctx.config.seed + 1000), len(images_uint8)))
  return ctx.batched(fn, (ctx.variables, ctx.probe()["head"]), images_uint8, keys)


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
  val = ctx.subset("val", ctx.config.eval.tta_examples)
  probs = view_probabilities(ctx, val["image"])
  views, curves = accuracy_by_views(probs, val["label"])
  if jax.process_index() == 0:
    report_lib.line_plot(os.path.join(ctx.workdir, PLOT), views, curves, log2_x=True,
                     xlabel="views N", ylabel="linear-probe top-1",
                     title=f"TTA accuracy by number of views ({len(val['label'])} val images)")
  return {f"tta_{mode}_top1": curve[-1] for mode, curve in curves.items()}


PLOT = "tta_views.png"
EVALUATOR = base.Evaluator(
    "tta", run, section="tta", keys=("tta_none_top1", "tta_image_top1", "tta_steered_top1"),
    plots=(PLOT,),
    defaults=dict(
        tta_views=8, tta_examples=256,  # TTA and OOD use this many held-out images
        # Test-time policy (an augment config: base policy + overrides): flips, mild crops and
        # colour, so that averaging views helps instead of hurting as strong training crops do.
        tta_policy=dict(base="none", crop_scale=(0.6, 1.0), crop_ratio=(3 / 4, 4 / 3), flip_p=0.5,
                        jitter=(0.2, 0.2, 0.2, 0.02), jitter_p=0.5, grayscale_p=0.0)))
