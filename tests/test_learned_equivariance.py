"""Learned-equivariance measures on layers whose equivariance is known exactly."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from steerjax.metrics import learned_equivariance as le

SIZE = 12


class CircularNet(nn.Module):
  """Circular-padding convs: exactly equivariant to shifts by multiples of their stride."""
  position_bias: bool = False
  kernel: int = 3

  @nn.compact
  def __call__(self, x):
    conv1 = nn.Conv(4, (self.kernel, self.kernel), padding="CIRCULAR")(x)
    if self.position_bias:  # breaks translation equivariance
      conv1 = conv1 + self.param("bias", nn.initializers.normal(1.0), conv1.shape[1:])
    conv2 = nn.Conv(6, (3, 3), strides=(2, 2), padding="CIRCULAR")(nn.relu(conv1))
    return {"conv1": conv1, "conv2": conv2, "pooled": conv2.mean((1, 2))}


STRIDES = {"conv1": 1, "conv2": 2}


def _features_fn(seed=0, **kwargs):
  net = CircularNet(**kwargs)
  images = jax.random.uniform(jax.random.key(seed), (3, SIZE, SIZE, 3))
  variables = net.init(jax.random.key(seed + 1), images)
  return jax.jit(lambda x: net.apply(variables, x)), images


def test_warp_matches_roll_and_rot90():
  x = jax.random.uniform(jax.random.key(0), (2, 8, 8, 3))
  np.testing.assert_array_equal(le.warp(x, 0.0, "rotate"), x)
  np.testing.assert_allclose(le.warp(x, 2.0, "translate_x"), jnp.roll(x, 2, axis=2), atol=1e-6)
  np.testing.assert_allclose(le.warp(x, -3.0, "translate_y"), jnp.roll(x, -3, axis=1), atol=1e-6)
  np.testing.assert_allclose(le.warp(x, np.pi / 2, "rotate"), jnp.rot90(x, -1, axes=(1, 2)), atol=1e-4)


def test_correlation_is_one_for_circular_convs():
  features, images = _features_fn()
  for margin in (0, 4):
    out = le.correlation_equivariance(features, images, STRIDES, shifts=(2, 4), rotations=(), margin=margin)
    for name in ("conv1", "conv2", "pooled", "overall"):
      assert out["translate"][name] == pytest.approx(1.0, abs=1e-5)


def test_odd_shifts_skip_strided_layers():
  features, images = _features_fn()
  out = le.correlation_equivariance(features, images, STRIDES, shifts=(1,), rotations=())
  assert set(out["translate"]) == {"conv1", "pooled", "overall"}


def test_correlation_detects_broken_equivariance():
  features, images = _features_fn(position_bias=True)
  out = le.correlation_equivariance(features, images, STRIDES, shifts=(2,), rotations=(1,), margin=0)
  assert out["translate"]["conv1"] < 0.9
  # A generic 3x3 kernel is not rotation equivariant; a 1x1 kernel is.
  features, images = _features_fn(kernel=1)
  out = le.correlation_equivariance(features, images, STRIDES, shifts=(), rotations=(1, 2, 3), margin=0)
  assert out["rotate"]["conv1"] == pytest.approx(1.0, abs=1e-5)
  features, images = _features_fn(kernel=3)
  out = le.correlation_equivariance(features, images, STRIDES, shifts=(), rotations=(1,), margin=0)
  assert out["rotate"]["conv1"] < 0.99


def test_lie_derivative_zero_for_circular_conv_and_not_with_position_bias():
  features, images = _features_fn()
  linear_layers = lambda x: {"conv1": features(x)["conv1"]}
  for generator in ("translate_x", "translate_y"):
    out = le.layer_lie_derivatives(linear_layers, images, STRIDES, generator)
    assert out["conv1"] < 1e-10
    assert le.lie_derivative(lambda x: features(x)["conv1"].mean((1, 2)), images, generator) < 1e-10
  full = le.layer_lie_derivatives(features, images, STRIDES, "translate_x")
  assert full["conv2"] > 1e-4  # half-pixel shifts of a stride-2 layer are not exact
  features, images = _features_fn(position_bias=True)
  assert le.layer_lie_derivatives(features, images, STRIDES, "translate_x")["conv1"] > 1e-2


def test_rotation_lie_derivative():
  features, images = _features_fn(kernel=1)
  pointwise = lambda x: {"conv1": features(x)["conv1"]}
  assert le.layer_lie_derivatives(pointwise, images, STRIDES, "rotate")["conv1"] < 1e-10
  features, images = _features_fn(kernel=3)
  generic = lambda x: {"conv1": features(x)["conv1"]}
  assert le.layer_lie_derivatives(generic, images, STRIDES, "rotate")["conv1"] > 1e-4


class SowingNet(nn.Module):
  """Sows feature maps like steerjax.models.resnet and returns pooled features."""

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.relu(nn.Conv(4, (3, 3))(x))
    self.sow("intermediates", "stem", x)
    x = nn.relu(nn.Conv(8, (3, 3), strides=(2, 2))(x))
    self.sow("intermediates", "stage1", x)
    return x.mean((1, 2))


def _sown_measures_and_plot(model, strides, images, path):
  variables = jax.jit(lambda k, x: model.init(k, x, train=False))(jax.random.key(1), images)
  features = jax.jit(le.sown_features_fn(model, variables))
  feats = features(images)
  corr = le.correlation_equivariance(features, images, strides, margin=2)
  assert set(corr) == {"translate", "rotate"}
  assert all(-1 <= v <= 1 for family in corr.values() for v in family.values())
  lee = {"translate_x": le.layer_lie_derivatives(features, images, strides, "translate_x")}
  assert all(np.isfinite(v) and v >= 0 for family in lee.values() for v in family.values())
  le.plot_layer_equivariance({"correlation": corr, "lie_derivative": lee}, str(path))
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  return feats


def test_sown_features_measures_and_plot(tmp_path):
  images = jax.random.uniform(jax.random.key(0), (2, SIZE, SIZE, 3))
  feats = _sown_measures_and_plot(SowingNet(), {"stem": 1, "stage1": 2}, images, tmp_path / "layers.png")
  assert set(feats) == {"stem", "stage1", "output"}
  assert feats["stage1"].shape == (2, SIZE // 2, SIZE // 2, 8)


@pytest.mark.slow
def test_resnet_measures_and_plot(tmp_path):
  from steerjax.models import resnet
  model = resnet.get_encoder("resnet18", width_multiplier=0.125, cifar_stem=True)
  images = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3))
  feats = _sown_measures_and_plot(model, model.strides, images, tmp_path / "layers.png")
  assert set(feats) == {"stem", "stage1", "stage2", "stage3", "stage4", "output"}


def test_measure_on_a_function_returning_named_maps(tmp_path):
  net = CircularNet()
  images = jax.random.uniform(jax.random.key(0), (3, SIZE, SIZE, 3))
  variables = net.init(jax.random.key(1), images)
  out = le.measure(net.apply, variables, images, strides=STRIDES, margin=0, plot=str(tmp_path / "m.png"))
  features = jax.jit(lambda x: net.apply(variables, x))
  assert out["correlation"] == le.correlation_equivariance(features, images, STRIDES, margin=0)
  assert list(out["correlation"]["translate"]) == ["conv1", "conv2", "pooled", "overall"]
  assert out["correlation"]["translate"]["conv2"] > 1 - 1e-5  # circular convs: exactly equivariant
  lee = le.layer_lie_derivatives(features, images, STRIDES, "rotate")
  np.testing.assert_allclose([out["lie_derivative"]["rotate"][k] for k in lee], list(lee.values()), rtol=1e-4)
  assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  uint8 = (images * 255).astype(jnp.uint8)
  assert le.measure(net.apply, variables, uint8, strides=STRIDES)["correlation"] == le.measure(
      net.apply, variables, uint8.astype(jnp.float32) / 255, strides=STRIDES)["correlation"]


def test_measure_on_a_sowing_module_is_the_public_entry_point():
  import steerjax  # pylint: disable=g-import-not-at-top
  model = SowingNet()
  images = jax.random.uniform(jax.random.key(0), (2, SIZE, SIZE, 3))
  variables = model.init(jax.random.key(1), images, train=False)
  out = steerjax.measure_equivariance(model, variables, images, strides={"stem": 1, "stage1": 2},
                                      generators=("translate_x",))
  assert list(out["correlation"]["rotate"]) == ["stem", "stage1", "output", "overall"]
  assert set(out["lie_derivative"]) == {"translate_x"}
  with pytest.raises(ValueError, match="strides"):
    le.measure(model, variables, images)  # SowingNet has no `strides` attribute
