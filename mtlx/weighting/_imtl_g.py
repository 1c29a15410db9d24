"""IMTL-G: impartial multi-task learning, gradient balance (closed form on the Gramian)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from mtlx._src import linalg
from mtlx._src.weighting import Stats, Weighting, WeightingTransformation, as_transform


def imtl_g_weights(gramian: jax.Array) -> jax.Array:
    r"""IMTL-G weights ``w`` (T,): ``J^T w`` projects equally on every unit task gradient.

    .. math:: v = G^{+} d, \quad d_t = \|g_t\|, \qquad w = v / \textstyle\sum_t v_t

    ``J^T v`` is the min-norm ``x`` with ``<g_t, x> = ||g_t||`` for all t (``<u_t, x> = 1``), so
    ``J^T w`` projects equally on every unit gradient ``u_t``; this is TorchJD's generalisation of
    IMTL-G to linearly dependent rows (Quinton & Rey, 2024).

    Args:
      gramian: ``(T, T)`` Gramian ``G = J J^T``.

    Returns:
      ``(T,)`` weights; zero when ``sum_t v_t`` vanishes (e.g. all rows zero).

    .. note::
      ``v`` is computed as ``D^{-1} C^{+} 1`` with ``C = D^{-1} G D^{-1}`` the cosine matrix
      (``D = diag ||g_t||``): equal to ``G^{+} d`` for linearly independent rows, and accurate in
      float32 when the row norms spread over orders of magnitude. For linearly dependent rows the
      update's direction is the same as TorchJD's (the min-norm ``x`` with ``<u_t, x> = 1`` in the
      least-squares sense) but ``sum_t v_t``, hence its length, may differ. Eigenvalues of ``C``
      below ``10 T eps`` times the largest count as zero; ``w = 0`` when
      ``|sum_t v_t| ||J||_F < 1e-12``. TorchJD tests ``|sum_t v_t| < 1e-12`` on the raw scale,
      which zeroes the update of any Jacobian with norms above ~1e12; ours is scale-free (the
      weights are degree 0 in J).
    """
    dtype = gramian.dtype
    norms = linalg.norms_from_gramian(gramian)
    # G = D C D with C the cosine matrix of the rows, so G^{-1} d = D^{-1} C^{-1} 1: solving on C
    # keeps float32 accurate when the row norms spread over orders of magnitude (C's diagonal is 1).
    inv_norms = linalg.safe_divide(1.0, norms, eps=jnp.finfo(dtype).tiny ** 0.25 * norms.max())
    cosines = gramian * jnp.outer(inv_norms, inv_norms)
    ones = jnp.where(inv_norms > 0, 1.0, 0.0).astype(dtype)
    v = inv_norms * jnp.matmul(linalg.psd_pinv(cosines), ones, precision=jax.lax.Precision.HIGHEST)
    # v is degree -1 in J: test the sum on the scale ||J||_F^{-1}, so the threshold is scale-free.
    total = jnp.sum(v) * jnp.sqrt(jnp.maximum(jnp.trace(gramian), 0.0))
    ok = jnp.abs(total) >= 1e-12
    return jnp.where(ok, v * jnp.where(ok, 1.0 / jnp.sum(v), 0.0), 0.0)


def imtl_g() -> WeightingTransformation:
    r"""IMTL-G: impartial multi-task learning, gradient balance (Liu et al., ICLR 2021).

    .. math:: \text{update} = J^\top w, \quad w = \frac{G^{+} d}{\mathbf 1^\top G^{+} d},
       \quad d_t = \|g_t\|

    The update's projection onto every unit task gradient is the same: no task dominates by its
    gradient's norm. Closed form on the T x T Gramian; matches TorchJD's ``IMTLG`` (the
    generalisation to linearly dependent rows of the paper's ``(D U^T)^{-1}`` formula).

    Static under ``optax.inject_hyperparams`` (``static_args``): none; every numeric argument
    may be injected.

    Returns:
      A transformation from task-stacked updates (each leaf ``(T, *shape)``) to one update. Takes an
      optional precomputed ``gramian=`` extra arg and ignores the others (e.g. ``task_losses``).

    Properties: permutation-invariant, positively homogeneous (the weights do not depend on the
      scale), equal projections ``<update, g_t / ||g_t||>`` on every non-zero row when the rows are
      linearly independent; stateless; no task losses. Finite on zero, duplicate and rank-deficient
      rows (pseudo-inverse).

    References:
      Liu et al., `Towards Impartial Multi-task Learning
      <https://openreview.net/forum?id=IMPnRXEWpvr>`_, ICLR 2021.
      Quinton & Rey, `Jacobian Descent for Multi-Objective Optimization
      <https://arxiv.org/abs/2406.16232>`_, 2024 (the pseudo-inverse form).
    """

    def weights(stats: Stats, state: optax.EmptyState) -> tuple[jax.Array, optax.EmptyState]:
        return imtl_g_weights(stats.gramian), state

    return as_transform(Weighting("imtl_g", weights, reads="gramian"))
