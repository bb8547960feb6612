"""Autoencoder training losses: the taming-transformers / LDM `LPIPSWithDiscriminator` pieces.

Pure jnp functions, jit-able (the step in `adopt_weight` may be traced). The perceptual (LPIPS)
term is not here. A generator step combines them as
    nll = l1_loss(x, x_rec) + perceptual_weight * lpips(x, x_rec)
    g = generator_loss(disc(x_rec))
    d_weight = discriminator_weight * adaptive_weight(grad(nll, last_layer), grad(g, last_layer))
    loss = mean(nll) + kl_weight * mean(kl_divergence(mean, logvar))
           + d_weight * adopt_weight(disc_factor, step, disc_start) * g
and a discriminator step minimises adopt_weight(disc_factor, step, disc_start) * hinge_d_loss(...).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

__all__ = [
    "adaptive_weight",
    "adopt_weight",
    "generator_loss",
    "hinge_d_loss",
    "kl_divergence",
    "l1_loss",
    "vanilla_d_loss",
]


def _float(x) -> jnp.ndarray:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def _check_batch(x: jnp.ndarray, name: str) -> None:
    if x.ndim < 1:
        raise ValueError(f"{name} must have a leading batch axis, got a scalar.")


def hinge_d_loss(logits_real: jnp.ndarray, logits_fake: jnp.ndarray) -> jnp.ndarray:
    """Hinge discriminator loss, a scalar: 0.5 (mean(relu(1 - real)) + mean(relu(1 + fake))).

    logits_real, logits_fake: discriminator outputs of any shape (e.g. PatchGAN (N, h, w, 1)); each
    is averaged over all its elements.
    """
    real, fake = _float(logits_real), _float(logits_fake)
    return 0.5 * (jnp.mean(jax.nn.relu(1.0 - real)) + jnp.mean(jax.nn.relu(1.0 + fake)))


def vanilla_d_loss(logits_real: jnp.ndarray, logits_fake: jnp.ndarray) -> jnp.ndarray:
    """Non-saturating (BCE) discriminator loss, a scalar:
    0.5 (mean(softplus(-real)) + mean(softplus(fake)))."""
    real, fake = _float(logits_real), _float(logits_fake)
    return 0.5 * (jnp.mean(jax.nn.softplus(-real)) + jnp.mean(jax.nn.softplus(fake)))


def generator_loss(logits_fake: jnp.ndarray) -> jnp.ndarray:
    """Generator adversarial loss, a scalar: -mean(logits_fake) over all elements."""
    return -jnp.mean(_float(logits_fake))


def adopt_weight(weight, step, threshold) -> jnp.ndarray:
    """`weight` once step >= threshold, else 0 (taming: `if global_step < threshold: weight = 0`).

    weight: scalar or array; step, threshold: scalars, either may be traced. Returns weight's shape,
    float.
    """
    weight = _float(weight)
    return jnp.where(jnp.asarray(step) >= jnp.asarray(threshold), weight, jnp.zeros_like(weight))


def _global_norm(tree: Any) -> jnp.ndarray:
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        raise ValueError("gradients must contain at least one array, got an empty tree.")
    sq = []
    for g in leaves:
        g = _float(g)
        sq.append(jnp.sum(jnp.square(g.astype(jnp.promote_types(g.dtype, jnp.float32)))))
    return jnp.sqrt(sum(sq))


def adaptive_weight(
    nll_grads: Any, g_grads: Any, max_weight: float = 1e4, eps: float = 1e-4
) -> jnp.ndarray:
    """Adaptive GAN weight (taming `calculate_adaptive_weight`, before `discriminator_weight`), ().

    clip(||nll_grads|| / (||g_grads|| + eps), 0, max_weight) with gradients stopped. The grads are
    those of the reconstruction (nll) and generator losses w.r.t. the decoder's last layer: arrays
    or pytrees of arrays, whose norm is the global L2 norm over all leaves (the Frobenius norm for a
    single weight). At least float32.
    """
    if max_weight < 0 or eps < 0:
        raise ValueError(f"max_weight and eps must be >= 0, got {max_weight} and {eps}.")
    w = _global_norm(nll_grads) / (_global_norm(g_grads) + eps)
    return jax.lax.stop_gradient(jnp.clip(w, 0.0, max_weight))


def kl_divergence(mean: jnp.ndarray, logvar: jnp.ndarray) -> jnp.ndarray:
    """KL(N(mean, exp(logvar)) || N(0, I)) per example: (N, ...) x 2 -> (N,).

    0.5 sum(mean^2 + exp(logvar) - 1 - logvar) over all non-batch axes (LDM
    `DiagonalGaussianDistribution.kl`; LDM clamps logvar to [-30, 20] when building the posterior,
    which is the caller's job).
    """
    mean, logvar = _float(mean), _float(logvar)
    _check_batch(mean, "mean")
    if mean.shape != logvar.shape:
        raise ValueError(
            f"mean and logvar must have the same shape, got {mean.shape} and {logvar.shape}."
        )
    axes = tuple(range(1, mean.ndim))
    return 0.5 * jnp.sum(jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar, axis=axes)


def l1_loss(x: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    """Mean absolute error per example: (N, ...) x 2 -> (N,), averaged over all non-batch axes."""
    x, y = _float(x), _float(y)
    _check_batch(x, "x")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {x.shape} and {y.shape}.")
    return jnp.mean(jnp.abs(x - y), axis=tuple(range(1, x.ndim)))
