"""Augmentation policies: sampled distributions, encoding, config policies, batched path.

Distributions are checked over 10k draws against closed forms (crop area),
rates (flip, jitter, grayscale, blur, solarize) and torchvision's ranges; the
applied pipeline against the NumPy references of test_augment_ops.
"""

import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import test_augment_ops as ref
from steerjax import augment
from steerjax.augment import policies

N = 10_000


@pytest.fixture(scope="module")
def draws():
  """10k parameter draws per named policy on a 224 x 224 pixel grid (SimCLR's also continuous)."""
  out = {}
  for name in ("simclr_cifar", "simclr_imagenet", "byol_view1", "byol_view2", "none"):
    policy = augment.get_policy(name)
    keys = jax.random.split(jax.random.key(42), N)
    for source in ((224, 224), None) if name.startswith("simclr") else ((224, 224),):
      params = jax.jit(jax.vmap(lambda k: policy.sample(k, source)))(keys)
      out[name, source] = jax.tree.map(np.asarray, params)
  return out


def analytic_mean_area(s0, s1, ratio):
  """E[area] of RandomResizedCrop on a square source with symmetric log-ratio range and s1 <= 1.

  A try (a ~ U(s0, s1), u = log r ~ U(-U, U)) fits iff a <= exp(-|u|); the
  first fitting try of 10 is kept, else the whole image.
  """
  big = math.log(ratio[1])
  assert math.isclose(math.log(ratio[0]), -big) and s1 == 1.0 and s0 <= math.exp(-big)
  p_fit = ((1 - math.exp(-big)) - s0 * big) / (big * (1 - s0))
  area_and_fit = ((1 - math.exp(-2 * big)) / 2 - s0 ** 2 * big) / (2 * big * (1 - s0))
  q = (1 - p_fit) ** 10
  return (1 - q) * area_and_fit / p_fit + q * 1.0


@pytest.mark.parametrize("name, scale", [("simclr_cifar", 0.2), ("simclr_imagenet", 0.08)])
def test_crop_distribution(draws, name, scale):
  expected = analytic_mean_area(scale, 1.0, (3 / 4, 4 / 3))
  for source in ((224, 224), None):
    box = draws[name, source]["box"]
    top, left, height, width = box.T
    area = height * width
    assert abs(area.mean() - expected) < 0.01, (source, area.mean(), expected)
    assert area.min() >= scale - 0.01
    assert np.all(top >= 0) and np.all(left >= 0)
    assert np.all(top + height <= 1 + 1e-6) and np.all(left + width <= 1 + 1e-6)
    log_ratio = np.log(width / height)  # log-uniform aspect ratio: symmetric, bounded
    assert np.abs(log_ratio).max() <= math.log(4 / 3) + (0.02 if source else 1e-5)
    assert abs(log_ratio.mean()) < 0.01
    # Areas below 3/4 fit at every ratio, so there the ratio is not conditioned by fitting.
    small = area < 0.7
    assert abs(np.mean(np.abs(log_ratio[small]) < math.log(4 / 3) / 2) - 0.5) < 0.03
    # Top is uniform over the free room: E[top / (1 - height)] = 1/2.
    room = 1 - height
    assert abs(np.mean(top[room > 0.1] / room[room > 0.1]) - 0.5) < 0.02
  pixels = draws[name, (224, 224)]["box"] * 224  # RandomResizedCrop works in whole pixels
  np.testing.assert_allclose(pixels, np.round(pixels), atol=1e-3)


def test_crop_fallback_is_torchvision_centre_crop():
  for ratio, (height, width) in (((3.0, 4.0), (75, 224)), ((0.25, 0.3), (224, 67))):
    policy = policies.Policy("impossible", crop_scale=(0.9, 1.0), crop_ratio=ratio)
    box = np.asarray(jax.jit(policy.sample, static_argnums=1)(jax.random.key(0), (224, 224))["box"]) * 224
    np.testing.assert_allclose(box, [(224 - height) // 2, (224 - width) // 2, height, width], atol=1e-3)


def test_flag_rates_and_ranges(draws):
  for name, rates in {"simclr_cifar": dict(flip=0.5, jitter=0.8, grayscale=0.2, blur=0.0, solarize=0.0),
                      "simclr_imagenet": dict(flip=0.5, jitter=0.8, grayscale=0.2, blur=0.5, solarize=0.0),
                      "byol_view1": dict(flip=0.5, jitter=0.8, grayscale=0.2, blur=1.0, solarize=0.0),
                      "byol_view2": dict(flip=0.5, jitter=0.8, grayscale=0.2, blur=0.1, solarize=0.2),
                      "none": dict(flip=0.0, jitter=0.0, grayscale=0.0, blur=0.0, solarize=0.0)}.items():
    params = draws[name, (224, 224)]
    for flag, rate in rates.items():
      assert abs(params[flag].mean() - rate) < 0.02, (name, flag, params[flag].mean())
    policy = augment.get_policy(name)
    sigma = params["sigma"]
    np.testing.assert_array_equal(sigma[~params["blur"]], 0.0)
    if params["blur"].any():
      assert sigma[params["blur"]].min() >= 0.1 and sigma[params["blur"]].max() <= 2.0
      assert abs(sigma[params["blur"]].mean() - 1.05) < 0.03
    off = ~params["jitter"]
    np.testing.assert_array_equal(params["factors"][off], np.tile([1.0, 1.0, 1.0, 0.0], (off.sum(), 1)))
    np.testing.assert_array_equal(params["order"][off], np.tile(np.arange(4), (off.sum(), 1)))
    if params["jitter"].any():
      factors = params["factors"][params["jitter"]]
      low = [max(0, 1 - v) for v in policy.jitter[:3]] + [-policy.jitter[3]]
      high = [1 + v for v in policy.jitter[:3]] + [policy.jitter[3]]
      assert np.all(factors >= np.array(low) - 1e-6) and np.all(factors <= np.array(high) + 1e-6)
      np.testing.assert_allclose(factors.mean(0), (np.array(low) + np.array(high)) / 2, atol=0.02)


def test_jitter_order_is_a_uniform_permutation(draws):
  params = draws["simclr_imagenet", (224, 224)]
  orders = params["order"][params["jitter"]]
  np.testing.assert_array_equal(np.sort(orders, axis=1), np.tile(np.arange(4), (len(orders), 1)))
  counts = {perm: 0 for perm in itertools.permutations(range(4))}
  for order in map(tuple, orders):
    counts[order] += 1
  frequencies = np.array(list(counts.values())) / len(orders)
  assert np.abs(frequencies - 1 / 24).max() < 0.012


@pytest.mark.parametrize("name", ["simclr_cifar", "simclr_imagenet", "byol_view1", "byol_view2", "none"])
def test_encoding_is_standardised(draws, name):
  policy = augment.get_policy(name)
  encoded = np.asarray(policy.encode(draws[name, (224, 224)]))
  assert encoded.shape == (N, policy.param_dim) == (N, len(policies.ENCODING))
  _, std = policy.encoding_stats()
  raw = np.asarray(policies.raw_vector(draws[name, (224, 224)]))
  constant = raw.std(0) == 0
  np.testing.assert_allclose(encoded[:, constant], 0.0, atol=1e-5)
  np.testing.assert_allclose(encoded[:, ~constant].mean(0), 0.0, atol=0.05)
  np.testing.assert_allclose(encoded[:, ~constant].std(0), 1.0, atol=0.05)
  # Raw layout: EquiMod's, identity values where an op is off.
  params = draws[name, (224, 224)]
  np.testing.assert_array_equal(raw[:, :4], params["box"])
  np.testing.assert_array_equal(raw[:, [4, 5, 14, 15, 17]],
                                np.stack([params[k] for k in ("flip", "jitter", "grayscale", "blur", "solarize")], 1))
  off = ~params["jitter"]
  np.testing.assert_array_equal(raw[off, 6:14], np.tile([0, 1, 2, 3, 1, 1, 1, 0], (off.sum(), 1)))
  np.testing.assert_array_equal(raw[:, 16], params["sigma"])


def test_relative_layout():
  a = dict(box=jnp.array([0.1, 0.2, 0.5, 0.4]), factors=jnp.array([1.0, 1.0, 1.0, 0.0]))
  b = dict(box=jnp.array([0.0, 0.5, 0.8, 0.5]), factors=jnp.array([1.2, 0.7, 1.0, -0.1]))
  # centre y: 0.4 - 0.35, centre x: 0.75 - 0.4, height, width, then the factor differences.
  np.testing.assert_allclose(augment.relative(a, b), [0.05, 0.35, 0.3, 0.1, 0.2, -0.3, 0.0, -0.1], atol=1e-6)
  assert len(policies.RELATIVE) == 8
  batched = jax.tree.map(lambda v: jnp.stack([v, v]), (a, b))
  assert augment.relative(*batched).shape == (2, 8)


def test_apply_matches_numpy_pipeline():
  """Crop -> flip -> jitter (recorded order) -> grayscale -> blur -> solarize, against the references."""
  rng = np.random.default_rng(0)
  image = rng.uniform(size=(40, 40, 3)).astype(np.float32)
  for policy in (augment.get_policy("simclr_imagenet"), dataclasses.replace(
      augment.get_policy("byol_view2"), name="everything", grayscale_p=0.5, blur_p=0.5, solarize_p=0.5)):
    keys = jax.random.split(jax.random.key(3), 64)
    params = jax.vmap(lambda k: policy.sample(k, (40, 40)))(keys)
    views = jax.jit(jax.vmap(lambda p: policy.apply(image, p, 24)))(params)
    kernel = policy.blur_kernel_size(24)
    assert kernel == 3
    for i in range(len(keys)):
      p = jax.tree.map(lambda v: np.asarray(v[i]), params)
      top, left, height, width = np.round(p["box"] * 40).astype(int)
      x = ref.torch_resized_crop(image.astype(np.float64), top, left, height, width, 24, 24)
      x = x[:, ::-1] if p["flip"] else x
      x = ref.np_color_jitter(x, p["factors"], p["order"]) if p["jitter"] else x
      x = ref.np_grayscale(x) if p["grayscale"] else x
      x = ref.np_gaussian_blur(x, p["sigma"], kernel) if p["blur"] else x
      x = ref.np_solarize(x) if p["solarize"] else x
      np.testing.assert_allclose(views[i], x, atol=2e-4, rtol=0, err_msg=f"{policy.name} example {i}")


def test_named_and_config_policies():
  assert set(policies.POLICY_NAMES) >= {"simclr_cifar", "simclr_imagenet", "byol", "none"}
  view1, view2 = augment.get_policy("byol")
  assert (view1.blur_p, view1.solarize_p, view2.blur_p, view2.solarize_p) == (1.0, 0.0, 0.1, 0.2)
  assert augment.get_policy("simclr_cifar").jitter == pytest.approx((0.4, 0.4, 0.4, 0.1))
  assert augment.get_policy("simclr_imagenet").blur_kernel_size(224) == 23
  custom = augment.get_policy(ml_collections.ConfigDict(dict(base="simclr_cifar", jitter_strength=1.0,
                                                             crop_scale=[0.5, 1.0], name="mine")))
  assert custom.name == "mine" and custom.crop_scale == (0.5, 1.0) and custom.grayscale_p == 0.2
  assert custom.jitter == pytest.approx((0.8, 0.8, 0.8, 0.2))
  hash(custom)  # hashable: usable as a static jit argument
  assert custom == augment.get_policy(dict(base="simclr_cifar", jitter_strength=1.0, crop_scale=(0.5, 1), name="mine"))
  pair = augment.get_policy(dict(base="byol", grayscale_p=0.0))
  assert [p.grayscale_p for p in pair] == [0.0, 0.0] and pair[1].solarize_p == 0.2
  with pytest.raises(ValueError, match=r"'jitter_strenght'.*allowed: base, name, jitter_strength"):
    augment.get_policy(dict(base="simclr_cifar", jitter_strenght=0.5))
  with pytest.raises(ValueError, match="unknown policy 'simclr'"):
    augment.get_policy("simclr")
  with pytest.raises(ValueError, match="flip_p"):
    augment.get_policy(dict(flip_p=1.5))
  with pytest.raises(ValueError, match="hue"):
    augment.get_policy(dict(jitter=(0.1, 0.1, 0.1, 0.7)))


def test_augment_batch_shapes_determinism_and_no_python_loop():
  rng = np.random.default_rng(0)
  policy = augment.get_policy("simclr_imagenet")
  big = rng.integers(0, 256, size=(2, 256, 256, 3), dtype=np.uint8)
  views, vectors = augment.augment_batch(policy, jax.random.key(0), big, 224)
  assert views.shape == (2, 224, 224, 3) and views.dtype == jnp.float32 and vectors.shape == (2, 18)
  assert 0.0 <= float(views.min()) and float(views.max()) <= 1.0
  small = rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
  views, vectors, params = augment.augment_batch_with_params(policy, jax.random.key(1), small, 32)
  assert views.shape == (4, 32, 32, 3)
  again, _ = augment.augment_batch(policy, jax.random.key(1), small, 32)
  np.testing.assert_array_equal(views, again)
  other, _ = augment.augment_batch(policy, jax.random.key(2), small, 32)
  assert np.abs(np.asarray(other) - np.asarray(views)).max() > 0.1
  np.testing.assert_allclose(vectors, policy.encode(params), atol=1e-6)
  apply = jax.jit(policy.apply, static_argnums=2)
  for i in range(4):
    example = jax.tree.map(lambda v: v[i], params)
    np.testing.assert_allclose(views[i], apply(small[i] / 255.0, example, 32), atol=1e-5)
  # One vmapped program: its size does not grow with the batch.
  program = lambda b: str(jax.make_jaxpr(augment.augment_batch_with_params.__wrapped__, static_argnums=(0, 3))(
      policy, jax.random.key(0), small[:1].repeat(b, 0), 32))
  assert len(program(2)) == len(program(8))


def test_resize_batch_is_plain_resize():
  images = np.random.default_rng(0).integers(0, 256, size=(3, 16, 16, 3), dtype=np.uint8)
  np.testing.assert_allclose(augment.resize_batch(images, 16), images / 255.0, atol=1e-6)
  resized = augment.resize_batch(images, 8)
  np.testing.assert_allclose(resized[1], ref.pil_resized_crop(images[1] / 255.0, 0, 0, 16, 16, 8, 8), atol=2e-5)


def _method_config(**augment_cfg):
  from steerjax import config as config_lib  # pylint: disable=g-import-not-at-top
  cfg = config_lib.base_config()
  cfg.method = "simclr"
  for key, value in augment_cfg.items():
    cfg.augment[key] = value
  config_lib.validate(cfg)
  return cfg


def test_byol_pair_name_gives_each_view_its_policy():
  """policy="byol" once validated and then failed at trace time (get_policy gives a pair)."""
  from steerjax import methods  # pylint: disable=g-import-not-at-top
  method = methods.get_method(_method_config(policy="byol"), num_classes=10)
  assert method.view_policies() == augment.get_policy("byol")
  assert method.policy() == augment.get_policy("byol_view1")
  images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
  rng = jax.random.PRNGKey(3)
  v1, p1, v2, p2 = method.two_views({"image": images}, rng)
  k1, k2 = jax.random.split(rng)
  for (view, vec), key, name in (((v1, p1), k1, "byol_view1"), ((v2, p2), k2, "byol_view2")):
    want_view, want_vec = augment.augment_batch(augment.get_policy(name), key, images, method.image_size)
    np.testing.assert_array_equal(view, want_view)
    np.testing.assert_array_equal(vec, want_vec)


def test_config_dict_policy_is_accepted_and_validated():
  """The schema once rejected a ConfigDict policy by type."""
  from steerjax import config as config_lib  # pylint: disable=g-import-not-at-top
  from steerjax import methods  # pylint: disable=g-import-not-at-top
  custom = ml_collections.ConfigDict(dict(base="simclr_cifar", crop_scale=(0.5, 1.0)))
  method = methods.get_method(_method_config(policy=custom), num_classes=10)
  assert method.policy().crop_scale == (0.5, 1.0) and method.policy().grayscale_p == 0.2
  with pytest.raises(config_lib.ConfigError, match=r"^config\.augment\.policy: .*'crop_scal'"):
    _method_config(policy=ml_collections.ConfigDict(dict(base="simclr_cifar", crop_scal=(0.5, 1.0))))
  with pytest.raises(config_lib.ConfigError, match=r"augment\.policy2='byol'"):
    _method_config(policy2="byol")
  with pytest.raises(config_lib.ConfigError, match=r"augment\.policy2='none'.*pair"):
    _method_config(policy="byol", policy2="none")
  with pytest.raises(config_lib.ConfigError, match=r"augment\.policy=''.*byol or a ConfigDict"):
    _method_config(policy="")
