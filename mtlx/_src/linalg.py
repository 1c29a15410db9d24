"""Small linear algebra on the T x T Gramian, shared by the weighting methods and the analysis."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def normalize_gramian(gramian: jax.Array, eps: float = 1e-4) -> jax.Array:
    """``G / trace(G)``: the Gramian of ``J / ||J||_F``; zero when ``trace(G) < eps``."""
    trace = jnp.trace(gramian)
    return jnp.where(
        trace < eps, jnp.zeros_like(gramian), gramian / jnp.where(trace < eps, 1.0, trace)
    )


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


def psd_pinv(matrix: jax.Array, rtol: float | None = None) -> jax.Array:
    """Moore-Penrose pseudo-inverse of a symmetric PSD matrix, by ``eigh``.

    Eigenvalues at or below ``rtol * max_eigenvalue`` are treated as zero (``rtol`` defaults to
    ``10 * T * eps``, ``jnp.linalg.pinv``'s rule). A zero matrix gives a zero pseudo-inverse.
    """
    n = matrix.shape[0]
    if rtol is None:
        rtol = 10.0 * n * jnp.finfo(matrix.dtype).eps
    eigenvalues, eigenvectors = jnp.linalg.eigh(matrix)
    keep = eigenvalues > rtol * jnp.maximum(jnp.max(eigenvalues), 0.0)
    inverse = jnp.where(keep, 1.0 / jnp.where(keep, eigenvalues, 1.0), 0.0)
    return jnp.matmul(eigenvectors * inverse, eigenvectors.T, precision=jax.lax.Precision.HIGHEST)


def cross_gramian(jac_a, jac_b) -> jax.Array:
    """``A = J_a J_b^T`` (T x T) of two per-task Jacobians over their shared leaves.

    With ``J_a``, ``J_b`` taken on two independent mini-batches, ``A`` is an unbiased estimate of
    the Gramian ``E[J] E[J]^T`` (the "double sampling" of MoDo and SDMGrad); it is not symmetric.
    Each argument is an engine Jacobian or a pytree of task-stacked leaves ``(T, *shape)``.
    """
    from mtlx._src import jacobians  # local: linalg is otherwise free of the Jacobian classes

    jac_a, jac_b = jacobians.as_jacobian(jac_a), jacobians.as_jacobian(jac_b)
    if jac_a.num_tasks != jac_b.num_tasks or jac_a.shared_mask != jac_b.shared_mask:
        raise ValueError(
            f"cross_gramian needs two Jacobians of the same model: got {jac_a.num_tasks} and "
            f"{jac_b.num_tasks} tasks, shared masks {jac_a.shared_mask} and {jac_b.shared_mask}."
        )
    leaves_a, leaves_b = jax.tree.leaves(jac_a.rows()), jax.tree.leaves(jac_b.rows())
    if [jnp.shape(x) for x in leaves_a] != [jnp.shape(x) for x in leaves_b]:
        raise ValueError("cross_gramian needs two Jacobians with the same leaf shapes.")
    t = jac_a.num_tasks
    blocks = [
        jnp.matmul(
            a.reshape(t, -1),
            b.reshape(t, -1).T,
            precision=jax.lax.Precision.HIGHEST,
            preferred_element_type=jacobians.gramian_dtype(jnp.result_type(a, b)),
        )
        for a, b, shared in zip(leaves_a, leaves_b, jac_a.shared_mask)
        if shared
    ]
    if not blocks:
        return jnp.zeros((t, t), jacobians.gramian_dtype(jnp.result_type(*leaves_a)))
    return sum(blocks)
