"""FairGrad: alpha-fair resource allocation across tasks (Newton's method on the Gramian)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from mtlx._src import checks, linalg, solvers, tolerances
from mtlx._src.weighting import Stats, Weighting, WeightingTransformation, as_transform


def fairgrad_weights(
    gramian: jax.Array,
    alpha: jax.typing.ArrayLike = 1.0,
    *,
    max_iters: int = 100,
    reg_eps: float | None = None,
    tol: float | None = None,
) -> jax.Array:
    r"""FairGrad weights: the positive root of ``G w = w^{-1/alpha}`` (element-wise power).

    The root is the minimiser of the strictly convex
    ``F(w) = ½ w^T G w + sum_t phi(w_t)`` with ``phi'(w) = -w^{-1/alpha}`` (``-log w`` for
    ``alpha = 1``), found by damped Newton steps (``H = G + diag(w^{-1/alpha - 1} / alpha)`` is
    positive definite) with a vectorised backtracking line search that keeps ``w > 0``
    (``solvers.alpha_fair_root``); it stops when the Newton decrement is below ``tol``. The solve
    runs on ``G / trace(G)`` and the weights are rescaled by ``trace(G)^{-alpha / (1 + alpha)}``
    (the root's exact scaling law). A row is zero as ``linalg.nonzero_rows`` says.

    Args:
      gramian: ``(T, T)`` Gramian ``G = J J^T``.
      alpha: the fairness parameter (> 0; ``0`` gives the uniform weights ``1/T``).
      max_iters: bound on the Newton iterations.
      reg_eps: relative ridge: the Gramian's diagonal is multiplied by ``1 + reg_eps``, so that
        the root exists when rows cancel (e.g. ``g`` and ``-g``); ``None``: ``100 eps`` of the
        dtype (relative to each row's own squared norm, so small rows are not swamped).
      tol: stop when ``grad^T H^{-1} grad`` falls below this (``None``: ``T * eps^(3/2)``).

    Returns:
      ``(T,)`` positive weights; zero rows get weight 0 (their root would be infinite).
    """
    num_tasks = gramian.shape[0]
    dtype = gramian.dtype
    if reg_eps is None:
        reg_eps = tolerances.FAIRGRAD_RIDGE_FACTOR * tolerances.eps(dtype)
    alpha = jnp.asarray(alpha, dtype)
    linear = alpha == 0  # alpha = 0 is linear scalarization (Section 3 of the paper)
    alpha = jnp.where(linear, 1.0, alpha)
    trace = jnp.trace(gramian)
    positive = trace > 0
    g = linalg.normalize_gramian(gramian, 0.0)
    diag = jnp.diagonal(g)
    # A zero row has no finite root: solve the others (its row/column replaced by the identity's).
    live = linalg.nonzero_rows(g)
    both = live[:, None] & live[None, :]
    eye = jnp.eye(num_tasks, dtype=dtype)
    g = jnp.where(both, g, 0.0) + jnp.where(live, reg_eps * diag, 1.0) * eye
    w = solvers.alpha_fair_root(g, alpha, max_iters=max_iters, tol=tol)
    w = jnp.where(live, w, 0.0) * jnp.where(positive, trace, 1.0) ** (-alpha / (1.0 + alpha))
    w = jnp.where(positive, w, 0.0)
    return jnp.where(linear, jnp.full((num_tasks,), 1.0 / num_tasks, dtype), w)


def fairgrad(
    alpha: jax.typing.ArrayLike = 1.0,
    max_iters: int = 100,
) -> WeightingTransformation:
    r"""FairGrad: fair resource allocation in multi-task learning (Ban & Ji, ICML 2024).

    .. math:: \text{update} = J^\top w, \qquad G w = w^{-1/\alpha}, \quad w > 0

    The update ``d = J^T w`` gives every task the utility ``<g_t, d> = w_t^{-1/alpha}``: the
    alpha-fair allocation of Equation 4 (``alpha = 1``: proportional fairness, ``alpha -> inf``:
    max-min fairness, ``alpha = 0``: the mean). The root is found in pure JAX by Newton's method on
    a strictly convex function of ``w`` on the T x T Gramian (bounded, early exit), where TorchJD
    calls scipy's ``least_squares``; the two agree on the root.

    Args:
      alpha: the fairness parameter ``alpha >= 0`` (1.0 as in the paper's code).
      max_iters: bound on the Newton iterations.

    Static under ``optax.inject_hyperparams`` (``static_args``): ``max_iters``; every other
    numeric argument may be injected.

    Returns:
      A transformation from task-stacked updates (each leaf ``(T, *shape)``) to one update. Takes an
      optional precomputed ``gramian=`` extra arg and ignores the others (e.g. ``task_losses``).

    Properties: permutation-invariant; non-conflicting when the root exists (``<update, g_t> =
      w_t^{-1/alpha} > 0``); the update scales as ``c^{(1 - alpha)/(1 + alpha)}`` when the rows
      are scaled by ``c`` (scale-invariant at ``alpha = 1``, not homogeneous); stateless; no task
      losses. Zero rows get weight 0.

    .. note::
      When rows cancel exactly (e.g. ``g`` and ``-g``: 0 is in the rows' conic hull) the equation
      has no positive root; a relative ridge of ``100 eps`` on the Gramian's diagonal keeps the
      weights finite and the update near zero (TorchJD's solver stops at its iteration bound
      instead, with an arbitrary update).

    References:
      Ban & Ji, `Fair Resource Allocation in Multi-Task Learning
      <https://arxiv.org/abs/2402.15638>`_, ICML 2024.
    """
    checks.nonnegative("alpha", alpha)

    def weights(stats: Stats, state: optax.EmptyState) -> tuple[jax.Array, optax.EmptyState]:
        return fairgrad_weights(stats.gramian, alpha, max_iters=max_iters), state

    return as_transform(Weighting("fairgrad", weights, reads="gramian"))
