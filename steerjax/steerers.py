"""Steerers: maps rho(g) acting on embeddings so that f(g.x) ~ rho(g) f(x).

Every steerer is a Flax module called as `steerer.apply(vars, z, g, train=...)`
with z [B, d] and g [B, k], returning z_hat [B, d]; `train` only matters for
`EquiModPredictor` (BatchNorm) and is accepted by all for a uniform interface.

Steerers linear in g (`LinearSteerer`, `HyperLinear`) also expose
`basis_apply(z) -> [B, k, d]` (the products A_k z) and
`combine(z, basis_out, g)`, so N steered copies of one embedding cost one pass of
the k basis maps plus O(N k d) instead of N d x d products (steered TTA):

  basis = steerer.apply(vars, z, method="basis_apply")             # [B, k, d]
  z_hat = steerer.apply(vars, z[:, None], basis[:, None], g_bnk,
                        method="combine")                          # [B, N, d]
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def _check_g(g: jax.Array, g_dim: int) -> None:
  if g.shape[-1] != g_dim:
    raise ValueError(f"g has {g.shape[-1]} entries per example, steerer expects {g_dim}.")


def _apply_basis(generators: jax.Array, z: jax.Array) -> jax.Array:
  """(A_k z) for generators [k, d, d] and z [..., d] -> [..., k, d].

  One [.., d] x [d, k·d] matmul: XLA:CPU runs the equivalent batched einsum ~8x slower.
  """
  k, d, _ = generators.shape
  return (z @ generators.reshape(k * d, d).T).reshape(*z.shape[:-1], k, d)


def _weighted_sum(basis_out: jax.Array, g: jax.Array) -> jax.Array:
  """sum_k g_k (A_k z), broadcasting the leading axes of g and basis_out."""
  return jnp.sum(g[..., :, None] * basis_out, axis=-2)


class LinearSteerer(nn.Module):
  """rho(g) = I + sum_k g_k A_k with A_k starting at zero (rho = I at init)."""
  dim: int
  g_dim: int

  def setup(self):
    self.generators = self.param(
        "generators", nn.initializers.zeros, (self.g_dim, self.dim, self.dim))

  def basis_apply(self, z):
    return _apply_basis(self.generators, z)

  def combine(self, z, basis_out, g):
    return z + _weighted_sum(basis_out, g)

  def matrices(self, g):
    _check_g(g, self.g_dim)
    return jnp.eye(self.dim) + jnp.einsum("...k,kij->...ij", g, self.generators)

  def __call__(self, z, g, train: bool = False):
    del train
    _check_g(g, self.g_dim)
    return self.combine(z, self.basis_apply(z), g)


def torch_linear_init(key, shape, dtype=jnp.float32):
  """PyTorch nn.Linear's default weight init, U(+-1/sqrt(fan_in)), for a [fan_in, out] kernel."""
  bound = 1.0 / jnp.sqrt(shape[0])
  return jax.random.uniform(key, shape, dtype, -bound, bound)


class HyperLinear(nn.Module):
  """SIE's linear hypernetwork: W(g) = reshape(H g), z_hat = W z, no bias.

  `kernel` [k, d*d] is H transposed (g @ kernel = H g), initialised like
  PyTorch's nn.Linear (U(+-1/sqrt(k))); an SIE checkpoint's `weight` [d*d, k]
  maps to `kernel = weight.T`. W[i, j] = (H g)[i*d + j] (row-major).
  """
  dim: int
  g_dim: int

  def setup(self):
    self.kernel = self.param("kernel", torch_linear_init, (self.g_dim, self.dim * self.dim))

  def basis_apply(self, z):
    return _apply_basis(self.kernel.reshape(self.g_dim, self.dim, self.dim), z)

  def combine(self, z, basis_out, g):
    del z  # No identity term: W(g) is the whole map.
    return _weighted_sum(basis_out, g)

  def matrices(self, g):
    _check_g(g, self.g_dim)
    return (g @ self.kernel).reshape(*g.shape[:-1], self.dim, self.dim)

  def __call__(self, z, g, train: bool = False):
    del train
    _check_g(g, self.g_dim)
    return self.combine(z, self.basis_apply(z), g)


class HyperMLP(nn.Module):
  """MLP hypernetwork: W(g) = reshape(MLP(g)) (row-major), z_hat = W z."""
  dim: int
  g_dim: int
  hidden: Sequence[int] = (64,)

  def setup(self):
    self.hidden_layers = [nn.Dense(width) for width in self.hidden]
    self.out_layer = nn.Dense(self.dim * self.dim)

  def matrices(self, g):
    _check_g(g, self.g_dim)
    h = g
    for layer in self.hidden_layers:
      h = nn.relu(layer(h))
    return self.out_layer(h).reshape(*g.shape[:-1], self.dim, self.dim)

  def __call__(self, z, g, train: bool = False):
    del train
    return jnp.einsum("...ij,...j->...i", self.matrices(g), z)


class ExpmSteerer(nn.Module):
  """rho(g) = expm(sum_k g_k A_k): rho(0) = I and, for commuting generators,
  rho(g1) rho(g2) = rho(g1 + g2). A_k start at zero (rho = I at init)."""
  dim: int
  g_dim: int

  def setup(self):
    self.generators = self.param(
        "generators", nn.initializers.zeros, (self.g_dim, self.dim, self.dim))

  def matrices(self, g):
    _check_g(g, self.g_dim)
    return jax.scipy.linalg.expm(jnp.einsum("...k,kij->...ij", g, self.generators))

  def __call__(self, z, g, train: bool = False):
    del train
    return jnp.einsum("...ij,...j->...i", self.matrices(g), z)


class EquiModPredictor(nn.Module):
  """EquiMod's predictor: y_hat = BN_no_affine(Dense([y0 ; BN(Dense(p))])).

  Called as (z=y0, g=p): y0 is the equivariant projection of the original
  image and p the augmentation parameter vector; the paper uses dim=128.
  """
  dim: int
  g_dim: int

  @nn.compact
  def __call__(self, z, g, train: bool = False):
    _check_g(g, self.g_dim)
    bn = dict(use_running_average=not train, momentum=0.9, epsilon=1e-5)
    emb = nn.BatchNorm(**bn)(nn.Dense(self.dim, use_bias=False)(g))
    y = nn.Dense(self.dim, use_bias=False)(jnp.concatenate([z, emb], axis=-1))
    return nn.BatchNorm(use_scale=False, use_bias=False, **bn)(y)


STEERERS = {
    "linear": LinearSteerer,
    "hyper_linear": HyperLinear,
    "hyper_mlp": HyperMLP,
    "expm": ExpmSteerer,
    "equimod": EquiModPredictor,
}


def get_steerer(name: str, dim: int, g_dim: int, **kwargs: Any) -> nn.Module:
  """Builds a steerer by name; extra kwargs go to the module (e.g. `hidden`)."""
  if name not in STEERERS:
    raise ValueError(f"Unknown steerer {name!r}; choose from {sorted(STEERERS)}.")
  return STEERERS[name](dim=dim, g_dim=g_dim, **kwargs)
