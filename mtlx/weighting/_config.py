"""ConFIG: conflict-free inverse gradients, written on the Gramian."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mtlx._src import linalg, tolerances
from mtlx._src.jacobians import scale_gramian
from mtlx._src.methods import preference_weighting
from mtlx._src.weighting import WeightingTransformation

_HIGHEST = jax.lax.Precision.HIGHEST


def config_weights(
    gramian: jax.Array, pref_vector: jax.Array | None = None, *, rtol: float | None = None
) -> jax.Array:
    r"""ConFIG weights ``w`` (T,) with ``J^T w`` equal to ConFIG's update.

    With unit rows ``U = D^{-1} J`` (``D = diag ||g_t||``) and their Gramian
    ``G_U = D^{-1} G D^{-1}``, the direction ``U^+ p = U^T G_U^+ p = J^T D^{-1} c`` with
    ``c = G_U^+ p``; it is normalised and scaled by the sum of the rows' projections on it:

    .. math:: w = \frac{\mathbf 1^\top G D^{-1} c}{c^\top G_U c}\; D^{-1} c

    Args:
      gramian: ``(T, T)`` Gramian ``G = J J^T``.
      pref_vector: ``(T,)`` preference ``p``; ``None`` for ones (TorchJD's default).
      rtol: eigenvalues of ``G_U`` below ``rtol`` times the largest count as zero in the
        pseudo-inverse; ``None`` for ``10 T eps``.

    Returns:
      ``(T,)`` weights; zero rows get weight 0 and a zero direction gives zero weights.

    .. note::
      TorchJD takes ``pinv`` of the ``T x P`` unit rows, dropping singular values below
      ``max(T, P) eps`` times the largest; here the cut is on the eigenvalues of ``G_U`` (the
      squared singular values) at ``10 T eps``, the rounding level of a Gramian. The two differ
      only for rows that are linearly dependent to within ``~1e-7`` (float64).
    """
    num_tasks = gramian.shape[0]
    dtype = gramian.dtype
    if pref_vector is None:
        pref_vector = jnp.ones((num_tasks,), dtype)
    pref_vector = jnp.asarray(pref_vector).astype(dtype)
    # The weights are degree 0 in J: work on G / trace(G).
    positive = jnp.trace(gramian) > 0
    normalized = linalg.normalize_gramian(gramian, 0.0)
    inv_norms = linalg.inverse_norms(normalized)
    unit_gramian = scale_gramian(normalized, inv_norms)
    c = jnp.matmul(linalg.psd_pinv(unit_gramian, rtol), pref_vector, precision=_HIGHEST)
    direction_sq_norm = c @ jnp.matmul(unit_gramian, c, precision=_HIGHEST)
    row_coefficients = inv_norms * c  # the direction is J^T (D^{-1} c)
    length = jnp.sum(jnp.matmul(normalized, row_coefficients, precision=_HIGHEST))
    # torch.nn.functional.normalize's eps: a (near) zero direction gives a zero update.
    ok = positive & (direction_sq_norm > tolerances.NORMALIZE_EPS**2)
    scale = jnp.where(ok, length / jnp.where(ok, direction_sq_norm, 1.0), 0.0)
    return scale * row_coefficients


def config(
    pref_vector: jax.typing.ArrayLike | None = None,
) -> WeightingTransformation:
    r"""ConFIG: conflict-free inverse gradients (Liu et al., ICLR 2025), as TorchJD's ``ConFIG``.

    .. math:: d = U^{+} p, \quad u_t = g_t / \|g_t\|, \qquad
       \text{update} = \Big(\textstyle\sum_t g_t^\top \hat d\Big)\, \hat d, \quad
       \hat d = d / \|d\|

    ``d`` has the prescribed projections ``p_t`` (default 1: equal) on every unit gradient, so it
    conflicts with no task when the rows are linearly independent; its length is the sum of the
    task gradients' projections (Equation 2 of the paper). Computed on the T x T Gramian: with
    ``G_U = D^{-1} G D^{-1}`` the Gramian of the unit rows, ``U^+ = U^T G_U^+``, so no row is read
    apart from the final combination.

    Args:
      pref_vector: ``(T,)`` preference weights; ``None`` for ones (TorchJD's default).

    Static under ``optax.inject_hyperparams`` (``static_args``): none; every numeric argument
    may be injected.

    Returns:
      A transformation from task-stacked updates (each leaf ``(T, *shape)``) to one update. Takes an
      optional precomputed ``gramian=`` extra arg and ignores the others (e.g. ``task_losses``).

    Properties: permutation-invariant (with the default preference), positively homogeneous,
      non-conflicting for linearly independent rows; stateless; no task losses. Zero rows are
      left out (unit row 0, as TorchJD's ``nan_to_num``).

    References:
      Liu et al., `ConFIG: Towards Conflict-free Training of Physics Informed Neural Networks
      <https://arxiv.org/abs/2408.11104>`_, ICLR 2025.
    """
    return preference_weighting(
        "config", lambda stats, pref: config_weights(stats.gramian, pref), pref_vector
    )
