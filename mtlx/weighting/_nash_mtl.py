"""Nash-MTL: multi-task learning as a bargaining game."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtlx._src import builders, linalg


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
    Newton steps (Nesterov & Nemirovski) in the scaled variables :math:`\alpha \circ u`: each step
    solves :math:`(D G D + I) u = 1 - \alpha \circ G\alpha` with :math:`D = \mathrm{diag}(\alpha)`,
    a system whose eigenvalues are all :math:`\ge 1`, and moves by :math:`u / (1 + \lambda)` (a
    step that keeps :math:`\alpha > 0`) until the Newton decrement :math:`\lambda` is below
    rounding level, or ``max_iters`` steps. It runs on the cosine matrix
    (:math:`\alpha_t = \beta_t / \|g_t\|`, :math:`C \beta = 1 / \beta`), regularized by
    ``reg_eps I`` so that duplicate or opposite rows give finite weights; a zero row gets weight 0.
    The start :math:`\beta \propto 1` is exact for orthogonal rows.

    Args:
      gramian: ``(T, T)`` Gramian.
      max_norm: if positive, the weights are scaled so that ``||J^T alpha|| <= max_norm``.
      max_iters: bound on the Newton steps.
      reg_eps: regularization of the cosine matrix (rank-deficient Jacobians).
      return_unclipped: also return the weights before the ``max_norm`` clipping.

    Returns:
      ``(T,)`` weights (and the unclipped weights if ``return_unclipped``); 0 for a zero row.
    """
    num_tasks = gramian.shape[0]
    dtype = gramian.dtype
    eye = jnp.eye(num_tasks, dtype=dtype)
    # alpha = diag(1 / ||g_t||) beta turns G alpha = 1 / alpha into C beta = 1 / beta on the cosine
    # matrix C: scale-free per task, and a zero row (1 / ||g_t|| := 0) gets weight 0.
    inv_norms = linalg.safe_divide(1.0, linalg.norms_from_gramian(gramian))
    c = gramian * jnp.outer(inv_norms, inv_norms) + jnp.asarray(reg_eps, dtype) * eye
    # beta = s 1 with the s that minimizes f along that ray: exact for orthogonal rows.
    beta = jnp.full((num_tasks,), 1.0, dtype) * jnp.sqrt(num_tasks / jnp.sum(c))

    def step(carry):
        beta, _, it = carry
        residual = 1.0 - beta * (c @ beta)
        system = beta[:, None] * c * beta[None, :] + eye
        u = jnp.linalg.solve(system, residual)
        decrement = jnp.sqrt(jnp.maximum(u @ residual, 0.0))
        return beta * (1.0 + u / (1.0 + decrement)), decrement, it + 1

    def keep_going(carry):
        _, decrement, it = carry
        return (it < max_iters) & (decrement > 10 * jnp.sqrt(jnp.finfo(dtype).eps))

    init = (beta, jnp.asarray(jnp.inf, dtype), 0)
    beta, _, _ = jax.lax.while_loop(keep_going, step, init)
    alpha = inv_norms * beta
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
    step: jax.Array  # int32 number of updates so far


def nash_mtl(
    num_tasks: int,
    max_norm: jax.typing.ArrayLike = 1.0,
    update_weights_every: int = 1,
    optim_niter: int = 20,
    reg_eps: jax.typing.ArrayLike = 1e-8,
) -> optax.GradientTransformationExtraArgs:
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
      optim_niter: bound on the Newton steps (static); it usually stops after a handful.
      reg_eps: the cosine matrix is regularized by ``reg_eps I`` (rank-deficient Jacobians).

    Returns:
      A transformation from a per-task Jacobian to one update. Accepts ``gramian=``;
      ``task_losses`` is optional.

    Raises:
      ValueError: for ``num_tasks``, ``update_weights_every`` or ``optim_niter`` below 1, a
        negative ``max_norm``, or a Jacobian whose number of tasks differs from ``num_tasks``.

    Properties: permutation-invariant, scale-invariant before the clipping (rows scaled by c give
    weights scaled by 1/c and the same update; with the clipping, a norm-capped update),
    non-conflicting (every :math:`g_t^\top J^\top \alpha = 1 / \alpha_t > 0` when G is
    non-singular), equal to :math:`\sum_t g_t / \|g_t\|` for orthogonal rows (before clipping).
    Stateful: last weights and step counter.

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
        ("optim_niter", optim_niter),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {value!r}.")
    if not isinstance(max_norm, jax.core.Tracer) and not float(max_norm) >= 0.0:
        raise ValueError(f"max_norm must be non-negative; got {max_norm!r}.")

    def init_fn(params):
        del params
        dtype = jnp.promote_types(jnp.float32, jnp.result_type(float))
        return NashMTLState(weights=jnp.ones((num_tasks,), dtype), step=jnp.zeros((), jnp.int32))

    def weights_fn(gramian, losses, state):
        del losses
        builders.check_num_tasks("nash_mtl", num_tasks, gramian.shape[0])

        def solve(_):
            _, alpha = nash_mtl_weights(
                gramian, max_norm=0.0, max_iters=optim_niter, reg_eps=reg_eps, return_unclipped=True
            )
            return alpha.astype(state.weights.dtype)

        if update_weights_every == 1:
            alpha = solve(None)
        else:
            alpha = jax.lax.cond(
                state.step % update_weights_every == 0, solve, lambda _: state.weights, None
            )
        weights = _clip(alpha.astype(gramian.dtype), gramian, max_norm)
        return weights, NashMTLState(weights=alpha, step=state.step + 1)

    return builders.gramian_weighting(weights_fn, name="nash_mtl", init_fn=init_fn)
