"""Aligned-MTL: align the principal components of the task gradients (condition number one)."""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from mtlx._src import tolerances
from mtlx._src.methods import preference_weighting
from mtlx._src.weighting import WeightingTransformation

ScaleMode = Literal["min", "median", "rmse"]
_SCALE_MODES = ("min", "median", "rmse")


def _check_scale_mode(scale_mode: str) -> None:
    if scale_mode not in _SCALE_MODES:
        raise ValueError(f"unknown scale_mode {scale_mode!r}; expected 'min', 'median' or 'rmse'.")


def aligned_mtl_weights(
    gramian: jax.Array,
    pref_vector: jax.Array | None = None,
    *,
    scale_mode: ScaleMode = "min",
) -> jax.Array:
    r"""Aligned-MTL weights ``w = B p`` with the balance transformation ``B`` of the Gramian.

    .. math:: G = V \Lambda V^\top, \qquad B = \sqrt{\sigma}\, V_r \Lambda_r^{-1/2} V_r^\top

    over the ``r`` eigenvalues above ``T * eps * max(Lambda)`` (the rank, as TorchJD counts it);
    ``sigma`` is the smallest (``"min"``), the lower median (``"median"``) or the mean (``"rmse"``)
    of them. ``J^T B`` has orthogonal rows of equal norm ``sqrt(sigma)`` on the rows' span.

    Args:
      gramian: ``(T, T)`` Gramian ``G = J J^T``.
      pref_vector: ``(T,)`` preference ``p``; ``None`` for ``1/T``.
      scale_mode: ``"min"`` (default), ``"median"`` or ``"rmse"``.

    Returns:
      ``(T,)`` weights; ``p`` itself when ``G`` is zero (TorchJD's identity transformation).
    """
    _check_scale_mode(scale_mode)
    num_tasks = gramian.shape[0]
    dtype = gramian.dtype
    if pref_vector is None:
        pref_vector = jnp.full((num_tasks,), 1.0 / num_tasks, dtype)
    pref_vector = jnp.asarray(pref_vector).astype(dtype)

    eigenvalues, eigenvectors = jnp.linalg.eigh(gramian)  # ascending
    tol = jnp.max(eigenvalues) * num_tasks * tolerances.eps(dtype)
    in_rank = eigenvalues > tol
    rank = jnp.sum(in_rank)
    safe = jnp.where(in_rank, eigenvalues, 1.0)
    if scale_mode == "min":
        scale = jnp.min(jnp.where(in_rank, eigenvalues, jnp.inf))
    elif scale_mode == "median":
        # torch.median's lower median of the r kept eigenvalues; those are the top r of ascending.
        index = num_tasks - rank + (rank - 1) // 2
        scale = eigenvalues[jnp.clip(index, 0, num_tasks - 1)]
    else:
        scale = jnp.sum(jnp.where(in_rank, eigenvalues, 0.0)) / jnp.maximum(rank, 1)
    scale = jnp.where(rank > 0, scale, 1.0)
    inv_sqrt = jnp.where(in_rank, jax.lax.rsqrt(safe), 0.0)
    coefficients = (
        jnp.matmul(eigenvectors.T, pref_vector, precision=jax.lax.Precision.HIGHEST) * inv_sqrt
    )
    balanced = jnp.sqrt(scale) * jnp.matmul(
        eigenvectors, coefficients, precision=jax.lax.Precision.HIGHEST
    )
    return jnp.where(rank > 0, balanced, pref_vector)


def aligned_mtl(
    pref_vector: jax.typing.ArrayLike | None = None,
    scale_mode: ScaleMode = "min",
) -> WeightingTransformation:
    r"""Aligned-MTL (Senushkin et al., CVPR 2023), as TorchJD's ``AlignedMTL``.

    .. math:: \text{update} = J^\top B p, \qquad
       B = \sqrt{\sigma}\, V \Lambda^{-1/2} V^\top \text{ from } G = J J^\top = V \Lambda V^\top

    The task gradients are replaced by their aligned counterparts ``J^T B``: orthogonal, of equal
    norm ``sqrt(sigma)``, spanning the same space (the Jacobian's condition number becomes one),
    then combined with the preference ``p``. All on the T x T Gramian (one ``eigh``).

    Args:
      pref_vector: ``(T,)`` preference weights; ``None`` for ``1/T`` (TorchJD's default).
      scale_mode: the eigenvalue ``sigma`` that sets the update's scale: ``"min"`` the smallest
        kept eigenvalue (default, as TorchJD and the paper's Algorithm 1), ``"median"`` the lower
        median, ``"rmse"`` the mean (the original code's alternative).

    Static under ``optax.inject_hyperparams`` (``static_args``): none; every numeric argument
    may be injected.

    Returns:
      A transformation from task-stacked updates (each leaf ``(T, *shape)``) to one update. Takes an
      optional precomputed ``gramian=`` extra arg and ignores the others (e.g. ``task_losses``).

    Properties: permutation-invariant (with the default preference), positively homogeneous;
      stateless; no task losses. Eigenvalues below ``T * eps * max`` count as zero (rank-deficient
      and duplicate rows give finite updates); a zero Gramian gives the ``p``-weighted sum (zero).

    References:
      Senushkin et al., `Independent Component Alignment for Multi-Task Learning
      <https://arxiv.org/abs/2305.19000>`_, CVPR 2023.
    """
    _check_scale_mode(scale_mode)
    return preference_weighting(
        "aligned_mtl",
        lambda stats, pref: aligned_mtl_weights(stats.gramian, pref, scale_mode=scale_mode),
        pref_vector,
    )
