"""Loss building blocks shared by the methods (pure jnp, float32).

All batch reductions are over the full arrays passed in. Under `jax.jit` with
the batch axis sharded over a device mesh these are global reductions (XLA
inserts the collectives), so values and gradients do not depend on the device
count. Conventions follow the official PyTorch code (steerjax/design.md §5).
"""

import jax
import jax.numpy as jnp


def _l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  # Same clamp as torch.nn.functional.normalize.
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def nt_xent(a: jax.Array, b: jax.Array, temperature: float) -> jax.Array:
  """SimCLR's NT-Xent over the 2N rows of [a ; b], positives at the other view.

  Cosine logits / temperature, self-similarity removed, cross-entropy per row,
  mean over the 2N rows. Also EquiMod's equivariant term
  `nt_xent(prediction, target, 0.2)`, where the other view is a negative.
  """
  n = a.shape[0]
  z = _l2_normalize(jnp.concatenate([a, b], axis=0).astype(jnp.float32))
  logits = z @ z.T / temperature
  logits = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, logits)
  positives = jnp.concatenate([jnp.arange(n, 2 * n), jnp.arange(n)])
  positive_logits = jnp.take_along_axis(logits, positives[:, None], axis=1)[:, 0]
  return jnp.mean(jax.nn.logsumexp(logits, axis=1) - positive_logits)


def byol_loss(p: jax.Array, z: jax.Array) -> jax.Array:
  """BYOL: mean over pairs of 2 - 2 cos(p, sg(z)); the caller symmetrises."""
  p = _l2_normalize(p.astype(jnp.float32))
  z = _l2_normalize(jax.lax.stop_gradient(z).astype(jnp.float32))
  return jnp.mean(2.0 - 2.0 * jnp.sum(p * z, axis=-1))


def vicreg_invariance(x: jax.Array, y: jax.Array) -> jax.Array:
  """Mean squared error over all N*d entries (F.mse_loss)."""
  return jnp.mean(jnp.square(x.astype(jnp.float32) - y.astype(jnp.float32)))


def vicreg_variance(x: jax.Array) -> jax.Array:
  """h(X) = mean_j relu(1 - sqrt(var_unbiased(X_j) + 1e-4)), one view only."""
  std = jnp.sqrt(jnp.var(x.astype(jnp.float32), axis=0, ddof=1) + 1e-4)
  return jnp.mean(jax.nn.relu(1.0 - std))


def vicreg_covariance(x: jax.Array) -> jax.Array:
  """c(X) = sum_{i != j} C_ij^2 / D with C = (X - mean)^T (X - mean) / (N - 1)."""
  n, d = x.shape
  x = x.astype(jnp.float32)
  x = x - jnp.mean(x, axis=0)
  cov = x.T @ x / (n - 1)
  off_diagonal = jnp.where(jnp.eye(d, dtype=bool), 0.0, cov)
  return jnp.sum(jnp.square(off_diagonal)) / d


def vicreg_loss(x: jax.Array, y: jax.Array, *, sim_coeff: float = 25.0,
                std_coeff: float = 25.0, cov_coeff: float = 1.0
                ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """VICReg: sim * MSE + std * (h(X) + h(Y)) / 2 + cov * (c(X) + c(Y)).

  Defaults are the VICReg paper's 25/25/1 (SIE's code uses 10/10/1). The
  coefficients are keyword-only, as in `sie_loss`, whose order differs. Returns
  the loss and the unweighted terms.
  """
  terms = {
      "invariance": vicreg_invariance(x, y),
      "variance": (vicreg_variance(x) + vicreg_variance(y)) / 2,
      "covariance": vicreg_covariance(x) + vicreg_covariance(y),
  }
  loss = (sim_coeff * terms["invariance"] + std_coeff * terms["variance"]
          + cov_coeff * terms["covariance"])
  return loss, terms


def steering_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
  """sum_b ||pred_b - target_b||^2 / sum_b ||target_b||^2.

  Scale-free: multiplying pred and target by c leaves it unchanged, so the
  encoder cannot lower the steering term by shrinking its embeddings towards
  zero (a collapse shortcut that a plain squared error rewards). Gradients flow
  through both numerator and denominator; stop the target's gradient in the
  caller if wanted.
  """
  pred = pred.astype(jnp.float32)
  target = target.astype(jnp.float32)
  return jnp.sum(jnp.square(pred - target)) / jnp.maximum(jnp.sum(jnp.square(target)), 1e-12)


def ema_update(target, online, tau):
  """Target network update tau * target + (1 - tau) * online, leaf by leaf."""
  return jax.tree.map(lambda t, o: tau * t + (1.0 - tau) * o, target, online)


def byol_tau(step, total_steps, base: float = 0.996):
  """BYOL's EMA rate: base at step 0 rising to 1 at total_steps on a cosine."""
  progress = jnp.asarray(step, jnp.float32) / total_steps
  return 1.0 - (1.0 - base) * (jnp.cos(jnp.pi * progress) + 1.0) / 2.0
