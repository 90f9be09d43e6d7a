"""How equivariant has a network *learned* to be, layer by layer (steerjax/design.md §7).

Two measures on a feature function `features_fn(images [B,H,W,3]) -> {name:
array}` whose values are feature maps [B, h, w, c] (stride `strides[name]`
relative to the input) or pooled vectors [B, d] (treated as invariant: the
transformation acts trivially on them):

- `correlation_equivariance` (Bruintjes et al., CVPR-W 2023): Pearson
  correlation between Phi(T x) and T' Phi(x), T' being T rescaled to the layer.
- `layer_lie_derivatives` / `lie_derivative` (Gruver et al., ICLR 2023): the
  Lie derivative of the layer along a one-parameter group of warps, by `jax.jvp`.

`sown_features_fn` turns an encoder that sows its feature maps into the
`intermediates` collection (steerjax.models.resnet) into such a function;
`measure` (`steerjax.measure_equivariance`) runs both measures and the plot on
any such module or function.
"""

import math
from typing import Callable, Mapping, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np

FeaturesFn = Callable[[jax.Array], Mapping[str, jax.Array]]
GENERATORS = ("translate_x", "translate_y", "rotate")


def sown_features_fn(model, variables, *, output_name: str = "output",
                     apply_kwargs: Mapping | None = None) -> FeaturesFn:
  """features_fn of a Flax encoder: its sown `intermediates` plus its output, the module called
  with `apply_kwargs` (default `train=False`, steerjax's encoders in inference mode).

  Sown values are keyed by their sow name (the last path component), so
  `stem`, `stage1`..`stage4` of steerjax.models.resnet come out as such.
  """
  kwargs = {"train": False} if apply_kwargs is None else dict(apply_kwargs)

  def features(images):
    out, state = model.apply(variables, images, mutable=["intermediates"], **kwargs)
    flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(state["intermediates"]))
    feats = {path[-1]: value[-1] if isinstance(value, tuple) else value for path, value in flat.items()}
    feats[output_name] = out
    return feats

  return features


def _border_mask(size: int, boundaries: Sequence[int], margin: int) -> np.ndarray:
  """True at positions at least `margin` away (circularly) from every boundary.

  A boundary b sits between positions b-1 and b; with margin m, positions
  b-m .. b+m-1 are dropped. If nothing would remain, nothing is dropped.
  """
  keep = np.ones(size, bool)
  for b in boundaries:
    keep[np.arange(b - margin, b + margin) % size] = False
  return keep if keep.any() else np.ones(size, bool)


def _channel_pearson(a: np.ndarray, b: np.ndarray) -> float:
  """Pearson correlation per channel (rows = samples), averaged over channels.

  Channels with no variance in either array (dead units) carry no information
  about equivariance and are left out of the average.
  """
  a = a - a.mean(0)
  b = b - b.mean(0)
  den = np.sqrt((a * a).sum(0) * (b * b).sum(0))
  live = den > 1e-12 * max(den.max(), 1e-30)
  if not live.any():
    return float("nan")
  return float(np.mean((a * b).sum(0)[live] / den[live]))


def _flat(x: np.ndarray) -> np.ndarray:
  return x.reshape(-1, x.shape[-1])


def correlation_equivariance(
    features_fn: FeaturesFn,
    images,
    strides: Mapping[str, int],
    *,
    shifts: Sequence[int] | None = None,
    rotations: Sequence[int] = (1, 2, 3),
    margin: int = 4,
) -> dict:
  """Bruintjes et al.'s learned-equivariance correlation per layer.

  Translations: the input is rolled circularly by t pixels along y and along x,
  and a feature map of stride s is compared with the clean one rolled by t/s
  feature pixels; shifts that are not multiples of a layer's stride are skipped
  for that layer. The default is one shift equal to the largest stride, so every
  layer is measured. Rotations: rot90 by k quarter turns of the input and of the
  feature map (square inputs).

  Boundary effects: a network with zero padding sees the roll's wrap-around seam
  and its own borders at different places in the two maps, so along the shifted
  axis positions within ceil(margin / s) feature pixels of either the map border
  or the seam are cropped; for rotations the same border margin is cropped on
  all four sides. `margin=0` keeps everything (exact for circular padding).

  Each comparison is the Pearson correlation per channel over batch and kept
  positions, averaged over channels; pooled [B, d] outputs are compared with the
  clean ones (invariance). A layer's value for a transformation family is the
  mean over its shifts (both axes) or rotations.

  Returns:
    {"translate": {name: corr, ..., "overall": mean over layers},
     "rotate": {...}} (a family is absent when it has no transformations).
  """
  images = jnp.asarray(images)
  clean = {k: np.asarray(v, np.float64) for k, v in features_fn(images).items()}
  map_strides = [strides[k] for k, v in clean.items() if v.ndim == 4]
  if shifts is None:
    shifts = (max(map_strides, default=1),)
  results = {}

  def compare(family, transformed, align):
    for name, feat in transformed.items():
      feat = np.asarray(feat, np.float64)
      pair = align(name, clean[name], feat)
      if pair is not None:
        results.setdefault(family, {}).setdefault(name, []).append(_channel_pearson(*pair))

  for axis in (1, 2):
    for t in shifts:
      def align_shift(name, ref, feat, t=t, axis=axis):
        if ref.ndim == 2:
          return ref, feat
        stride = strides[name]
        if t % stride:
          return None
        size, step = ref.shape[axis], t // stride
        keep = _border_mask(size, (0, step % size), math.ceil(margin / stride))
        ref = np.take(np.roll(ref, step, axis=axis), np.flatnonzero(keep), axis=axis)
        return _flat(ref), _flat(np.take(feat, np.flatnonzero(keep), axis=axis))

      compare("translate", features_fn(jnp.roll(images, t, axis=axis)), align_shift)

  for k in rotations:
    def align_rot(name, ref, feat, k=k):
      if ref.ndim == 2:
        return ref, feat
      m = math.ceil(margin / strides[name])
      ref = np.rot90(ref, k, axes=(1, 2))
      if m and 2 * m < min(ref.shape[1:3]):
        ref, feat = ref[:, m:-m, m:-m], feat[:, m:-m, m:-m]
      return _flat(ref), _flat(feat)

    compare("rotate", features_fn(jnp.rot90(images, k, axes=(1, 2))), align_rot)

  out = {}
  for family, per_layer in results.items():
    out[family] = {name: float(np.nanmean(v)) for name, v in per_layer.items()}
    out[family]["overall"] = float(np.nanmean(list(out[family].values())))
  return out


def _bilinear(images: jax.Array, rows: jax.Array, cols: jax.Array, wrap: bool) -> jax.Array:
  """Samples images [B,H,W,C] at fractional (rows, cols) [H,W]; differentiable in both.

  Outside the image: wrap-around (`wrap`) or zeros.
  """
  height, width = images.shape[1:3]
  r0, c0 = jnp.floor(rows), jnp.floor(cols)
  fr, fc = (rows - r0)[..., None], (cols - c0)[..., None]
  r0, c0 = r0.astype(jnp.int32), c0.astype(jnp.int32)

  def at(r, c):
    if wrap:
      return images[:, r % height, c % width]
    inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
    return images[:, jnp.clip(r, 0, height - 1), jnp.clip(c, 0, width - 1)] * inside[..., None]

  return ((1 - fr) * (1 - fc) * at(r0, c0) + (1 - fr) * fc * at(r0, c0 + 1)
          + fr * (1 - fc) * at(r0 + 1, c0) + fr * fc * at(r0 + 1, c0 + 1))


def warp(images: jax.Array, t, generator: str) -> jax.Array:
  """Differentiable bilinear warp of [B,H,W,C] along a one-parameter group.

  translate_x / translate_y: content moves by t pixels (+x right, +y down),
  with wrap-around; rotate: rotation by t radians about the image centre
  ((H-1)/2, (W-1)/2), zeros outside. warp(x, 0) == x exactly.
  """
  height, width = images.shape[1:3]
  rows, cols = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32),
                            indexing="ij")
  if generator == "translate_x":
    return _bilinear(images, rows, cols - t, wrap=True)
  if generator == "translate_y":
    return _bilinear(images, rows - t, cols, wrap=True)
  if generator == "rotate":
    y, x = rows - (height - 1) / 2, cols - (width - 1) / 2
    cos, sin = jnp.cos(t), jnp.sin(t)
    return _bilinear(images, -sin * x + cos * y + (height - 1) / 2, cos * x + sin * y + (width - 1) / 2,
                     wrap=False)
  raise ValueError(f"unknown generator {generator!r}; use one of {GENERATORS}")


def _mean_square(tangent: jax.Array) -> float:
  return float(jnp.mean(tangent.astype(jnp.float32) ** 2))


def lie_derivative(fn: Callable[[jax.Array], jax.Array], images, generator: str = "translate_x") -> float:
  """End-to-end invariance LEE: d/dt fn(warp(x, t)) at t=0 (rho_out trivial).

  Normalisation: the squared norm of the derivative divided by the output
  dimension, averaged over the batch, i.e. the mean of its squared entries.
  Pass e.g. `lambda x: jax.nn.softmax(logits_fn(x))` for Gruver et al.'s
  end-to-end measure on class probabilities. The bilinear warp is piecewise
  linear in t; at t=0 jvp takes its one-sided derivative, i.e. a finite
  difference of neighbouring pixels.
  """
  images = jnp.asarray(images, jnp.float32)
  _, tangent = jax.jvp(lambda t: fn(warp(images, t, generator)), (jnp.float32(0.0),), (jnp.float32(1.0),))
  return _mean_square(tangent)


def layer_lie_derivatives(
    features_fn: FeaturesFn, images, strides: Mapping[str, int], generator: str = "translate_x"
) -> dict:
  """Per-layer equivariant LEE: d/dt [warp_{-t'} Phi(warp_t x)] at t=0, by one jvp.

  t' is t/stride for translations (the layer's pixels) and t for rotations
  (angles do not scale). Pooled [B, d] outputs get no warp back (invariance).
  Each layer's value is the mean squared entry of the derivative (squared norm
  over the layer's dimension, averaged over the batch), so layers of different
  sizes are comparable; it is 0 for an exactly equivariant layer.

  Returns {name: lee, ..., "overall": mean over layers}.
  """
  images = jnp.asarray(images, jnp.float32)
  scale = lambda name: 1.0 if generator == "rotate" else 1.0 / strides[name]

  def aligned(t):
    feats = features_fn(warp(images, t, generator))
    return {k: warp(v, -t * scale(k), generator) if v.ndim == 4 else v for k, v in feats.items()}

  _, tangents = jax.jvp(aligned, (jnp.float32(0.0),), (jnp.float32(1.0),))
  out = {k: _mean_square(v) for k, v in tangents.items()}
  out["overall"] = float(np.mean(list(out.values())))
  return out


def plot_layer_equivariance(results: Mapping[str, Mapping[str, Mapping[str, float]]], path: str) -> None:
  """One PNG: correlation (left) and Lie-derivative LEE (right, symlog scale) across depth.

  Args:
    results: {"correlation": correlation_equivariance(...),
              "lie_derivative": {generator: layer_lie_derivatives(...)}}; either
      key may be missing. Layers are plotted in their dict order (input to
      output); the "overall" entries are left out.
    path: where to write the PNG.
  """
  # A bare Figure, not pyplot: writing the file must not switch a notebook's backend.
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  panels = [(key, title) for key, title in (("correlation", "correlation Φ(Tx) vs T′Φ(x)"),
                                              ("lie_derivative", "Lie-derivative LEE")) if key in results]
  fig = Figure(figsize=(5.5 * len(panels), 4))
  axes = fig.subplots(1, len(panels), squeeze=False)
  for ax, (key, title) in zip(axes[0], panels):
    for family, per_layer in results[key].items():
      names = [k for k in per_layer if k != "overall"]
      ax.plot(range(len(names)), [per_layer[k] for k in names], marker="o", label=family)
      ax.set_xticks(range(len(names)), names, rotation=30)
    if key == "lie_derivative":
      # LEE is a mean square (>= 0) and can be exactly 0, which a log axis cannot show.
      ax.set_yscale("symlog", linthresh=1e-6)
      ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.set_xlabel("layer")
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def measure(apply_fn, variables, images, *, strides: Mapping[str, int] | None = None,
            apply_kwargs: Mapping | None = None, generators: Sequence[str] = ("translate_x", "rotate"),
            margin: int = 4, plot: str | None = None) -> dict:
  """Per-layer learned equivariance of any model: both measures, and optionally the plot.

  Args:
    apply_fn: a Flax module that sows its feature maps into `intermediates`
      (`self.sow("intermediates", name, x)`, as steerjax's encoders do; its output is measured
      too, as "output"), or any `apply_fn(variables, images) -> {name: [B, h, w, c] map or
      [B, d] vector}`.
    variables: its variables.
    images: float [B, H, W, 3] as the model takes them (uint8 is scaled to [0, 1]); square for
      the rotations.
    strides: {name: total stride of that map w.r.t. the input}, in depth order; default the
      module's `strides` attribute. Vectors need none.
    apply_kwargs: keyword arguments of the module's call (default `train=False`).
    generators: the Lie-derivative warps (`GENERATORS`).
    margin: border pixels the correlation crops (`correlation_equivariance`).
    plot: a PNG path for `plot_layer_equivariance`.

  Returns:
    {"correlation": correlation_equivariance(...), "lie_derivative": {generator:
    layer_lie_derivatives(...)}}, layers in `strides` order, then the vectors, then "overall".
  """
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  if isinstance(apply_fn, nn.Module):
    strides = getattr(apply_fn, "strides", None) if strides is None else strides
    features_fn = sown_features_fn(apply_fn, variables, apply_kwargs=apply_kwargs)
  else:
    features_fn = lambda x: apply_fn(variables, x)
  if strides is None:
    raise ValueError("give strides={name: stride} of the feature maps (the module has no `strides`)")
  images = jnp.asarray(images)
  images = images.astype(jnp.float32) / 255.0 if images.dtype == jnp.uint8 else images.astype(jnp.float32)
  # Maps without a stride cannot be aligned; they are left out (vectors are compared as they are).
  jitted = jax.jit(lambda x: {k: v for k, v in features_fn(x).items() if k in strides or v.ndim == 2})
  results = {"correlation": correlation_equivariance(jitted, images, strides, margin=margin),
             "lie_derivative": {g: layer_lie_derivatives(jitted, images, strides, g) for g in generators}}
  # Jitted functions return dicts in sorted-key order: back to depth order.
  depth = lambda layers: ([n for n in strides if n in layers]
                          + sorted(n for n in layers if n not in strides and n != "overall") + ["overall"])
  results = {kind: {family: {n: layers[n] for n in depth(layers)} for family, layers in per.items()}
             for kind, per in results.items()}
  if plot:
    plot_layer_equivariance(results, plot)
  return results
