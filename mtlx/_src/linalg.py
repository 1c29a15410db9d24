"""Small linear algebra on the T x T Gramian, shared by the weighting methods and the analysis."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def normalize_gramian(gramian: jax.Array, eps: float = 1e-4) -> jax.Array:
    """``G / trace(G)``: the Gramian of ``J / ||J||_F``; zero when ``trace(G) < eps``."""
    trace = jnp.trace(gramian)
    return jnp.where(trace < eps, jnp.zeros_like(gramian), gramian / jnp.where(trace < eps, 1.0, trace))


def regularize_gramian(gramian: jax.Array, eps: float = 1e-4) -> jax.Array:
    """``G + eps I``: positive definite despite rounding errors."""
    return gramian + eps * jnp.eye(gramian.shape[0], dtype=gramian.dtype)


def safe_divide(num: jax.Array, den: jax.Array, eps: float = 0.0) -> jax.Array:
    """``num / den`` where ``|den| > eps``, else 0 (and a zero gradient, not a NaN one)."""
    ok = jnp.abs(den) > eps
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def norms_from_gramian(gramian: jax.Array) -> jax.Array:
    """Row norms ``||g_t||`` from ``G``."""
    return jnp.sqrt(jnp.maximum(jnp.diagonal(gramian), 0.0))


def cosine_from_gramian(gramian: jax.Array, eps: float = 1e-30) -> jax.Array:
    """``cos(g_s, g_t)`` from ``G``; 0 where either row is zero."""
    norms = norms_from_gramian(gramian)
    return safe_divide(gramian, jnp.outer(norms, norms), eps)


def symmetric_sqrt(matrix: jax.Array, eps: float = 0.0) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Eigen-decomposition of a symmetric PSD matrix: ``(eigenvalues, eigenvectors, rank_mask)``.

    ``rank_mask`` marks eigenvalues above ``eps * max_eigenvalue``; the rest are treated as zero.
    """
    eigenvalues, eigenvectors = jnp.linalg.eigh(matrix)
    eigenvalues = jnp.maximum(eigenvalues, 0.0)
    rank_mask = eigenvalues > eps * jnp.max(eigenvalues)
    return eigenvalues, eigenvectors, rank_mask
