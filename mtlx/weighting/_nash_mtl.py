"""Nash-MTL: multi-task learning as a bargaining game."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtlx._src import checks, solvers
from mtlx._src.methods import state_dtype
from mtlx._src.weighting import Stats, Weighting, WeightingTransformation, as_transform


def nash_mtl_weights(
    gramian: jax.Array,
    *,
    max_norm: jax.typing.ArrayLike = 1.0,
    max_iters: int = 20,
    reg_eps: jax.typing.ArrayLike = 1e-8,
    return_unclipped: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    r"""Nash bargaining weights: the solution :math:`\alpha > 0` of :math:`G \alpha = 1 / \alpha`.

    That is the minimizer of the strictly convex, self-concordant
    :math:`f(\alpha) = \tfrac12 \alpha^\top G \alpha - \sum_t \log \alpha_t`, found by damped
    Newton steps on the cosine matrix (``solvers.nash_bargaining``), regularized by ``reg_eps I``
    so that duplicate or opposite rows give finite weights; a zero row gets weight 0.

    Args:
      gramian: ``(T, T)`` Gramian.
      max_norm: if positive, the weights are scaled so that ``||J^T alpha|| <= max_norm``.
      max_iters: bound on the Newton steps.
      reg_eps: regularization of the cosine matrix (rank-deficient Jacobians).
      return_unclipped: also return the weights before the ``max_norm`` clipping.

    Returns:
      ``(T,)`` weights (and the unclipped weights if ``return_unclipped``); 0 for a zero row.
    """
    alpha = solvers.nash_bargaining(gramian, max_iters=max_iters, reg_eps=reg_eps)
    weights = _clip(alpha, gramian, max_norm)
    return (weights, alpha) if return_unclipped else weights


def _clip(alpha: jax.Array, gramian: jax.Array, max_norm: jax.typing.ArrayLike) -> jax.Array:
    """``alpha`` scaled so that ``||J^T alpha|| <= max_norm`` (no clipping when max_norm = 0)."""
    norm = jnp.sqrt(jnp.maximum(alpha @ gramian @ alpha, 0.0))
    max_norm = jnp.asarray(max_norm, alpha.dtype)
    clip = (max_norm > 0) & (norm > max_norm)
    return jnp.where(clip, alpha * max_norm / jnp.where(clip, norm, 1.0), alpha)


class NashMTLState(NamedTuple):
    """State of :func:`nash_mtl`."""

    weights: jax.Array  # (T,) last solved weights, before the max_norm clipping
    count: jax.Array  # int32 number of updates so far


def nash_mtl(
    num_tasks: int,
    max_norm: jax.typing.ArrayLike = 1.0,
    update_weights_every: int = 1,
    max_iters: int = 20,
    reg_eps: jax.typing.ArrayLike = 1e-8,
) -> WeightingTransformation:
    r"""Nash-MTL (Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022).

    The update :math:`J^\top \alpha` is the Nash bargaining solution among the tasks: the
    :math:`\alpha > 0` with :math:`G \alpha = 1 / \alpha`, i.e. every task's directional
    derivative times its weight is 1 (:math:`\alpha_t\, g_t^\top J^\top \alpha = 1`). It is
    solved exactly in Gramian space (damped Newton, see :func:`nash_mtl_weights`); the update is
    then clipped to norm ``max_norm``. As TorchJD's ``NashMTL`` (same hyperparameters), whose CCP
    approximation (cvxpy) it replaces.

    Args:
      num_tasks: T, the size of the weights in the state (static).
      max_norm: maximum norm of the update; 0 disables the clipping.
      update_weights_every: solve for new weights every this many updates (static), reusing the
        last ones in between (rescaled by the clipping of the current Jacobian), as TorchJD.
      max_iters: bound on the Newton steps (static; TorchJD's ``optim_niter``, which bounds its
        convex-program iterations); it usually stops after a handful.
      reg_eps: the cosine matrix is regularized by ``reg_eps I`` (rank-deficient Jacobians),
        raised to 16 times the dtype's machine epsilon where it is smaller (float32: 1.9e-6;
        ``1 + 1e-8`` rounds to 1 there, and opposite rows would give NaN).

    Static under ``optax.inject_hyperparams`` (``static_args``): ``num_tasks``,
    ``update_weights_every``, ``max_iters``; every other numeric argument may be injected.

    Returns:
      A transformation from a per-task Jacobian to one update. Accepts ``gramian=``;
      ``task_losses`` is optional.

    Raises:
      ValueError: for ``num_tasks``, ``update_weights_every`` or ``max_iters`` below 1, a
        negative ``max_norm``, or a Jacobian whose number of tasks differs from ``num_tasks``.

    Properties: permutation-invariant, scale-invariant before the clipping (rows scaled by c give
    weights scaled by 1/c and the same update; with the clipping, a norm-capped update),
    non-conflicting (every :math:`g_t^\top J^\top \alpha = 1 / \alpha_t > 0` when G is
    non-singular), equal to :math:`\sum_t g_t / \|g_t\|` for orthogonal rows (before clipping).
    Stateful: last weights and update count.

    .. warning::
      TorchJD (after the authors' code) approximates the solution by a sequence of convex programs
      solved by ECOS; for 2 tasks it reaches the solution, but with more tasks and row norms
      spread over orders of magnitude its result can stall far from it (cosine 0.7-0.99 with the
      exact solution at T = 5 to 40 in our tests). mtlx returns the exact solution.

    References:
      Navon et al., "Multi-Task Learning as a Bargaining Game", ICML 2022.
    """
    for name, value in (
        ("num_tasks", num_tasks),
        ("update_weights_every", update_weights_every),
        ("max_iters", max_iters),
    ):
        checks.positive_int(name, value)
    checks.nonnegative("max_norm", max_norm)

    def init(params) -> NashMTLState:
        del params
        return NashMTLState(jnp.ones((num_tasks,), state_dtype()), count=jnp.zeros((), jnp.int32))

    def weights(stats: Stats, state: NashMTLState) -> tuple[jax.Array, NashMTLState]:
        gramian = stats.gramian

        def solve(_):
            alpha = solvers.nash_bargaining(gramian, max_iters=max_iters, reg_eps=reg_eps)
            return alpha.astype(state.weights.dtype)

        if update_weights_every == 1:
            alpha = solve(None)
        else:
            alpha = jax.lax.cond(
                state.count % update_weights_every == 0, solve, lambda _: state.weights, None
            )
        w = _clip(alpha.astype(gramian.dtype), gramian, max_norm)
        return w, NashMTLState(weights=alpha, count=state.count + 1)

    return as_transform(
        Weighting("nash_mtl", weights, init=init, reads="gramian", num_tasks=num_tasks)
    )
