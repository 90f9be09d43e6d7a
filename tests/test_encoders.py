"""The ViT and MLP-Mixer encoders: shapes, sown strides, and what a translation does to them.

Both embed non-overlapping p×p patches with one stride-p convolution, so a circular shift of
the input by p pixels shifts the patch map by exactly one token, and a shift that is not a
multiple of p does not; past the patch embedding the ViT is permutation-equivariant over tokens
except for its position embeddings, while the Mixer's token-mixing MLP ties every output token
to fixed positions.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from steerjax import config as config_lib
from steerjax.metrics import learned_equivariance
from steerjax.models import get_encoder

SIZE = 16


@functools.lru_cache(maxsize=None)
def built(name, patch):
  model = get_encoder(name, width_multiplier=0.125, patch_size=patch)
  x = jax.random.uniform(jax.random.key(1), (3, SIZE, SIZE, 3))
  variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(0), x)
  return model, variables


def features(name, patch, x, variables=None):
  model, init_vars = built(name, patch)
  fn = learned_equivariance.sown_features_fn(model, variables or init_vars)
  return {k: np.asarray(v) for k, v in jax.jit(fn)(x).items()}


def images():
  return jax.random.uniform(jax.random.key(2), (3, SIZE, SIZE, 3))


@pytest.mark.parametrize("name", ["vit", "mixer"])
@pytest.mark.parametrize("patch", [1, 4])
def test_shapes_and_sown_strides(name, patch):
  model, variables = built(name, patch)
  assert "batch_stats" not in variables
  feats = features(name, patch, images())
  assert feats["output"].shape == (3, model.feature_dim) == (3, 32)
  assert feats["output"].dtype == np.float32
  assert set(model.strides) == set(feats) - {"output"} == {"patches"} | {
      f"block{i}" for i in range(1, 7)}
  for layer, stride in model.strides.items():
    assert stride == patch
    assert feats[layer].shape == (3, SIZE // patch, SIZE // patch, 32), layer


def _relative_gap(a, b):
  return float(np.abs(a - b).max() / np.abs(a).max())


@pytest.mark.parametrize("name", ["vit", "mixer"])
@pytest.mark.parametrize("patch", [1, 4])
def test_patch_embedding_is_equivariant_to_shifts_by_the_patch(name, patch):
  x = images()
  clean = features(name, patch, x)
  moved = features(name, patch, jnp.roll(x, patch, axis=2))
  np.testing.assert_allclose(moved["patches"], np.roll(clean["patches"], 1, axis=2), atol=1e-5)
  if patch > 1:  # a sub-patch shift changes which pixels share a patch
    half = features(name, patch, jnp.roll(x, patch // 2, axis=2))
    assert _relative_gap(half["patches"], np.roll(clean["patches"], 1, axis=2)) > 0.1
    assert _relative_gap(half["patches"], clean["patches"]) > 0.1


def test_vit_blocks_are_shift_equivariant_only_without_position_embeddings():
  x, shifted = images(), jnp.roll(images(), 4, axis=1)
  _, variables = built("vit", 4)
  # Learned position embeddings (here a visible draw, as after training) break the symmetry ...
  loud = jax.tree.map(lambda v: v, variables)
  pos = loud["params"]["pos_embed"]
  loud["params"]["pos_embed"] = jax.random.normal(jax.random.key(3), pos.shape)
  clean, moved = features("vit", 4, x, loud), features("vit", 4, shifted, loud)
  assert _relative_gap(np.roll(clean["block6"], 1, axis=1), moved["block6"]) > 0.05
  # ... and without them attention and MLPs commute with any permutation of the tokens.
  flat = jax.tree.map(lambda v: v, variables)
  flat["params"]["pos_embed"] = jnp.zeros_like(pos)
  clean, moved = features("vit", 4, x, flat), features("vit", 4, shifted, flat)
  for layer in ("block1", "block6"):
    np.testing.assert_allclose(moved[layer], np.roll(clean[layer], 1, axis=1), atol=1e-4)
  np.testing.assert_allclose(moved["output"], clean["output"], atol=1e-5)


def test_mixer_token_mixing_breaks_shift_equivariance():
  x = images()
  clean, moved = features("mixer", 4, x), features("mixer", 4, jnp.roll(x, 4, axis=2))
  assert _relative_gap(np.roll(clean["block1"], 1, axis=2), moved["block1"]) > 0.05


def test_config_selects_the_encoder_and_checks_the_patch_grid():
  c = config_lib.base_config()
  c.model.name, c.model.patch_size = "mixer", 4
  config_lib.validate(c)
  c.model.patch_size = 5
  with pytest.raises(config_lib.ConfigError, match="model.patch_size"):
    config_lib.validate(c)
