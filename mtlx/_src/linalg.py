"""Small linear algebra on the T x T Gramian, shared by the weighting methods and the analysis."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mtlx._src import jacobians, tolerances
from mtlx._src.jacobians import scale_gramian


def normalize_gramian(gramian: jax.Array, eps: float = tolerances.GRAMIAN_NORM_EPS) -> jax.Array:
    """``G / trace(G)``: the Gramian of ``J / ||J||_F``; zero unless ``trace(G) > eps``.

    The one trace normalization of the weighting methods (``eps = 0``: every non-zero Gramian).
    """
    trace = jnp.trace(gramian)
    positive = trace > eps
    return jnp.where(positive, gramian / jnp.where(positive, trace, 1.0), jnp.zeros_like(gramian))


def regularize_gramian(gramian: jax.Array, eps: float = tolerances.GRAMIAN_REG_EPS) -> jax.Array:
    """``G + eps I``: positive definite despite rounding errors."""
    return gramian + eps * jnp.eye(gramian.shape[0], dtype=gramian.dtype)


def safe_divide(num: jax.Array, den: jax.Array, eps: float = 0.0) -> jax.Array:
    """``num / den`` where ``|den| > eps``, else 0 (and a zero gradient, not a NaN one)."""
    ok = jnp.abs(den) > eps
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def norms_from_gramian(gramian: jax.Array) -> jax.Array:
    """Row norms ``||g_t||`` from ``G``."""
    return jnp.sqrt(jnp.maximum(jnp.diagonal(gramian), 0.0))


def nonzero_rows(gramian: jax.Array) -> jax.Array:
    """``(T,)`` bool: the rows that are not zero rows.

    A row is zero when its norm is at most ``tolerances.zero_row_rtol`` times the largest row norm:
    the one zero-row rule of the methods that divide by row norms (scale-free).
    """
    norms = norms_from_gramian(gramian)
    return norms > tolerances.zero_row_rtol(gramian.dtype) * jnp.max(norms)


def inverse_norms(gramian: jax.Array) -> jax.Array:
    """``1 / ||g_t||`` from ``G``, and 0 for a zero row (:func:`nonzero_rows`)."""
    nonzero = nonzero_rows(gramian)
    return jnp.where(nonzero, 1.0 / jnp.where(nonzero, norms_from_gramian(gramian), 1.0), 0.0)


def cosine_from_gramian(gramian: jax.Array) -> jax.Array:
    """``cos(g_s, g_t)`` from ``G``: the Gramian ``D^{-1} G D^{-1}`` of the unit rows.

    0 where either row is zero (:func:`inverse_norms`).
    """
    return scale_gramian(gramian, inverse_norms(gramian))


def psd_pinv(matrix: jax.Array, rtol: float | None = None) -> jax.Array:
    """Moore-Penrose pseudo-inverse of a symmetric PSD matrix, by ``eigh``.

    Eigenvalues at or below ``rtol * max_eigenvalue`` are treated as zero (``rtol`` defaults to
    ``10 * T * eps``, ``jnp.linalg.pinv``'s rule). A zero matrix gives a zero pseudo-inverse.
    """
    n = matrix.shape[0]
    if rtol is None:
        rtol = tolerances.PINV_RTOL_FACTOR * n * tolerances.eps(matrix.dtype)
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
