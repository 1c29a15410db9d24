"""DualProj: the preference combination of the rows, projected onto their dual cone."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mtlx._src import solvers, tolerances
from mtlx._src.methods import preference_weighting
from mtlx._src.weighting import WeightingTransformation


def dualproj_weights(
    gramian: jax.Array,
    pref_vector: jax.Array | None = None,
    *,
    norm_eps: float = tolerances.GRAMIAN_NORM_EPS,
    reg_eps: float = tolerances.GRAMIAN_REG_EPS,
    max_iters: int | None = None,
    exact: bool = False,
) -> jax.Array:
    r"""DualProj weights: ``w = argmin_{v >= p} v^T G v``, so that ``J^T w = pi_J(J^T p)``.

    ``pi_J`` projects onto the dual cone ``{x : J x >= 0}`` of the rows (Proposition 1 of Quinton &
    Rey, 2024). ``G`` is first normalized by its trace and regularized by ``reg_eps I``, as in
    TorchJD; the QP is solved by the active-set solver of :mod:`mtlx._src.solvers`.

    Args:
      gramian: ``(T, T)`` Gramian ``G = J J^T``.
      pref_vector: ``(T,)`` preference ``p``; ``None`` for ``1/T`` (the mean).
      norm_eps: the Gramian is treated as zero when its trace is below this.
      reg_eps: added to the normalized Gramian's diagonal to make it positive definite.
      max_iters: bound on the active-set iterations (None: 4 T + 8).
      exact: see :func:`dualproj` (solve on the cosine matrix, no ``reg_eps``).

    Returns:
      ``(T,)`` weights, ``w >= p``.
    """
    num_tasks = gramian.shape[0]
    if pref_vector is None:
        pref_vector = jnp.full((num_tasks,), 1.0 / num_tasks, gramian.dtype)
    return solvers.dual_cone_weights(
        pref_vector, gramian, norm_eps=norm_eps, reg_eps=reg_eps, max_iters=max_iters, exact=exact
    )


def dualproj(
    pref_vector: jax.typing.ArrayLike | None = None,
    norm_eps: float = tolerances.GRAMIAN_NORM_EPS,
    reg_eps: float = tolerances.GRAMIAN_REG_EPS,
    max_iters: int | None = None,
    exact: bool = False,
) -> WeightingTransformation:
    r"""DualProj: project the preference combination onto the dual cone of the task gradients.

    .. math:: \text{update} = \pi_J\big(\textstyle\sum_t p_t\, g_t\big), \qquad
       \pi_J(y) = \arg\min_{x:\ J x \succeq 0} \|x - y\|

    The update is the closest vector to the (default: mean) combination that conflicts with no
    task gradient; for T tasks this is Equation 11 of Lopez-Paz & Ranzato (GEM, 2017) with the
    averaged gradient, as TorchJD's ``DualProj``. Solved as the QP ``min_{v >= p} v^T G v`` on the
    T x T Gramian in pure JAX (their Proposition 1).

    Args:
      pref_vector: ``(T,)`` preference weights ``p``; ``None`` for ``1/T``.
      norm_eps: the Gramian is set to zero when its trace is below this (all rows ~ 0).
      reg_eps: added to the trace-normalized Gramian's diagonal to make it positive definite (as
        TorchJD's ``QuadprogProjector(norm_eps, reg_eps)``).
      max_iters: bound on the active-set iterations of the QP solver (None: 4 T + 8).
      exact: solve on the cosine matrix of the rows instead (the dual cone does not change when
        the rows are scaled) with a ridge of a few machine epsilons and no ``norm_eps`` /
        ``reg_eps``: non-conflicting to rounding for rows of any relative size, rank-deficient
        Gramians and large T, where the default (TorchJD's) lets an update conflict with a row
        about ``1 / reg_eps`` times smaller than the largest (measured: cosine -0.99 with rows
        1e7 apart). Not TorchJD's result then; zero rows get weight 0.

    Static under ``optax.inject_hyperparams`` (``static_args``): ``exact``.

    Returns:
      A transformation from task-stacked updates (each leaf ``(T, *shape)``) to one update. Takes an
      optional precomputed ``gramian=`` extra arg and ignores the others (e.g. ``task_losses``).

    Properties: non-conflicting (up to ``reg_eps`` relative to the largest row; to rounding with
      ``exact=True``), permutation-invariant (with the default
      preference), positively homogeneous, equal to the ``p``-weighted sum when that sum conflicts
      with no task; stateless; no task losses.

    References:
      Lopez-Paz & Ranzato, `Gradient Episodic Memory for Continual Learning
      <https://arxiv.org/abs/1706.08840>`_, NeurIPS 2017.
      Quinton & Rey, `Jacobian Descent for Multi-Objective Optimization
      <https://arxiv.org/abs/2406.16232>`_, 2024.
    """
    options = dict(norm_eps=norm_eps, reg_eps=reg_eps, max_iters=max_iters, exact=exact)
    return preference_weighting(
        "dualproj",
        lambda stats, pref: dualproj_weights(stats.gramian, pref, **options),
        pref_vector,
    )
