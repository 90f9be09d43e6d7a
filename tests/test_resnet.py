"""ResNet encoders: shapes, strides of the sown maps, BN modes, bf16, and heads."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from steerjax.models import MLPHead, get_encoder


def _shapes(model, batch=2, size=32):
  """Output and sown shapes via abstract evaluation (no compilation)."""
  x = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
  return jax.eval_shape(
      lambda x: model.init_with_output(jax.random.key(0), x, train=False, mutable=True), x)


@pytest.mark.parametrize("name,expansion", [("resnet18", 1), ("resnet50", 4)])
@pytest.mark.parametrize("cifar_stem", [True, False])
def test_shapes_and_strides_match_sown_maps(name, expansion, cifar_stem):
  model = get_encoder(name, width_multiplier=0.125, cifar_stem=cifar_stem)
  assert model.feature_dim == 8 * 8 * expansion
  out, variables = _shapes(model)
  assert out.shape == (2, model.feature_dim)
  sown = variables["intermediates"]
  assert set(sown) == set(model.strides) == {"stem", "stage1", "stage2", "stage3", "stage4"}
  expected = {"stem": 1 if cifar_stem else 4}
  expected.update(stage1=expected["stem"], stage2=2 * expected["stem"],
                  stage3=4 * expected["stem"], stage4=8 * expected["stem"])
  assert model.strides == expected
  for layer, stride in model.strides.items():
    (feature_map,) = sown[layer]
    assert feature_map.shape[1:3] == (32 // stride, 32 // stride), layer
  assert sown["stage4"][0].shape[-1] == model.feature_dim


@pytest.mark.parametrize("name,count", [("resnet18", 11_176_512), ("resnet50", 23_508_032)])
def test_full_width_parameter_count_matches_torchvision(name, count):
  # torchvision resnet18/50 parameter counts minus the fc layer.
  model = get_encoder(name)
  variables = _shapes(model, batch=1, size=64)[1]
  assert sum(p.size for p in jax.tree.leaves(variables["params"])) == count
  assert model.feature_dim == {"resnet18": 512, "resnet50": 2048}[name]


def test_width_multiplier_floor_and_unknown_name():
  assert get_encoder("resnet18", width_multiplier=0.01).feature_dim == 8 * 8
  with pytest.raises(ValueError, match="resnet18"):
    get_encoder("vgg16")


@functools.lru_cache
def _trained_resnet18():
  """A tiny ResNet-18 after one train-mode pass, so running stats are not the init values."""
  model = get_encoder("resnet18", width_multiplier=0.125, cifar_stem=True)
  x = jax.random.uniform(jax.random.key(1), (6, 32, 32, 3))
  variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(0), x)
  _, updates = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
      variables, x)
  return model, {**variables, **updates}, x


def test_zero_init_last_bn_scale_in_each_block():
  model, variables, _ = _trained_resnet18()
  params = variables["params"]
  blocks = [k for k in params if k.startswith("BasicBlock")]
  assert len(blocks) == 8
  for block in blocks:
    np.testing.assert_array_equal(params[block]["BatchNorm_1"]["scale"], 0.0)
    np.testing.assert_array_equal(params[block]["BatchNorm_0"]["scale"], 1.0)


def test_eval_mode_is_deterministic_and_per_example():
  model, variables, x = _trained_resnet18()
  stats = variables["batch_stats"]["BatchNorm_0"]
  assert not np.allclose(stats["mean"], 0.0)  # The train pass moved the running stats.
  apply = jax.jit(functools.partial(model.apply, train=False))
  full = apply(variables, x)
  np.testing.assert_array_equal(full, apply(variables, x))
  np.testing.assert_allclose(apply(variables, x[:2]), full[:2], atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(apply(variables, x[::-1]), full[::-1], atol=1e-5, rtol=1e-5)
  # In train mode the batch statistics make each output depend on the rest of the batch.
  train_apply = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])[0])
  assert not np.allclose(train_apply(variables, x[:2]), train_apply(variables, x)[:2], atol=1e-4)


def test_bfloat16_forward_keeps_float32_params():
  model, variables, x = _trained_resnet18()
  bf16 = get_encoder("resnet18", width_multiplier=0.125, cifar_stem=True, dtype=jnp.bfloat16)
  abstract_variables = jax.eval_shape(
      functools.partial(bf16.init, train=False), jax.random.key(0), x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(abstract_variables))
  out, state = jax.jit(lambda v, x: bf16.apply(v, x, train=False, mutable=["intermediates"]))(
      variables, x)
  assert out.dtype == jnp.float32
  assert state["intermediates"]["stage4"][0].dtype == jnp.bfloat16
  reference = jax.jit(functools.partial(model.apply, train=False))(variables, x)
  np.testing.assert_allclose(out, reference, rtol=0.05, atol=0.05 * np.abs(reference).max())


@pytest.mark.parametrize("output", ["bn", "linear", "linear_bias"])
def test_mlp_head_layers(output):
  head = MLPHead((16, 16), 8, output=output)
  x = jax.random.normal(jax.random.key(0), (10, 12))
  variables = head.init(jax.random.key(1), x, train=False)
  params = variables["params"]
  assert [params[f"Dense_{i}"]["kernel"].shape for i in range(3)] == [(12, 16), (16, 16), (16, 8)]
  assert "bias" not in params["Dense_0"] and "bias" not in params["Dense_1"]
  assert ("bias" in params["Dense_2"]) == (output == "linear_bias")
  assert "BatchNorm_2" not in params  # the output BN has no affine
  assert ("BatchNorm_2" in variables["batch_stats"]) == (output == "bn")
  out, _ = head.apply(variables, x, train=True, mutable=["batch_stats"])
  assert out.shape == (10, 8)
  if output == "bn":
    # Train-mode BN without affine: every output unit has batch mean 0 and variance ~1.
    np.testing.assert_allclose(out.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.var(0), 1.0, rtol=1e-3)


def test_mlp_head_rejects_unknown_output():
  head = MLPHead((4,), 2, output="relu")
  with pytest.raises(ValueError, match="linear_bias"):
    head.init(jax.random.key(0), jnp.zeros((2, 3)), train=False)
