"""Augmentation on the accelerator: exact, PRNG-driven views and their parameters.

`augment_batch` samples per-example parameters from one key, applies them and
encodes them, for a whole uint8 batch in one jitted call (vmap, no Python loop
over examples), so it can run inside the train step.
"""

import functools

import jax
import jax.numpy as jnp

from steerjax.augment import ops
from steerjax.augment.policies import CONFIG_KEYS, ENCODING, POLICY_NAMES, RELATIVE, Policy, get_policy, raw_vector, relative


def _to_float(images_uint8):
  return jnp.asarray(images_uint8).astype(jnp.float32) / 255.0


@functools.partial(jax.jit, static_argnames=("policy", "size"))
def augment_batch_with_params(policy: Policy, key, images_uint8, size: int):
  """-> (views float32 [B, size, size, 3], encoded vectors [B, P], params dict of [B, ...])."""
  images = _to_float(images_uint8)
  params = jax.vmap(lambda k: policy.sample(k, images.shape[1:3]))(jax.random.split(key, images.shape[0]))
  views = jax.vmap(lambda image, p: policy.apply(image, p, size))(images, params)
  return views, policy.encode(params), params


def augment_batch(policy: Policy, key, images_uint8, size: int):
  """-> (views float32 [B, size, size, 3], encoded parameter vectors [B, P])."""
  views, vectors, _ = augment_batch_with_params(policy, key, images_uint8, size)
  return views, vectors


@functools.partial(jax.jit, static_argnames=("size",))
def resize_batch(images_uint8, size: int):
  """Plain antialiased bilinear resize of whole images: EquiMod's original view x0."""
  full = jnp.array([0.0, 0.0, 1.0, 1.0])
  return jax.vmap(lambda image: ops.resized_crop(image, full, size))(_to_float(images_uint8))
