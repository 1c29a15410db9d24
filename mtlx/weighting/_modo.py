"""MoDo: multi-objective gradient with double sampling (Chen et al., NeurIPS 2023)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from optax.projections import projection_simplex

from mtlx._src import checks
from mtlx._src.methods import uniform_weights
from mtlx._src.weighting import Stats, Weighting, WeightingTransformation, as_transform


def modo_weights(
    gramian: jax.Array,
    weights: jax.Array,
    *,
    gamma: jax.typing.ArrayLike = 0.1,
    rho: jax.typing.ArrayLike = 0.1,
) -> jax.Array:
    r"""One MoDo weight step, :math:`\Pi_\Delta(\lambda - \gamma (A\lambda + \rho\lambda))`.

    Args:
      gramian: ``A = J_1 J_2^T`` (T x T) from two independent mini-batches (Equation 2.9a), or
        ``J J^T`` of one batch (a biased single-sample estimate).
      weights: the current weights :math:`\lambda` (T,), on the simplex.
      gamma: step size of the weight update.
      rho: :math:`\ell_2` regularisation of the weights.

    Returns:
      The new weights :math:`\lambda` (T,), on the simplex; the update is ``sum_t lambda_t g_t``.
    """
    weights = weights.astype(jnp.promote_types(weights.dtype, gramian.dtype))
    grad = gramian.astype(weights.dtype) @ weights + rho * weights
    return projection_simplex(weights - gamma * grad).astype(weights.dtype)


class MoDoState(NamedTuple):
    """State of :func:`modo`."""

    weights: jax.Array  # (T,) task weights lambda on the simplex, uniform at first


def modo(
    num_tasks: int,
    learning_rate: jax.typing.ArrayLike = 0.1,
    rho: jax.typing.ArrayLike = 0.1,
) -> WeightingTransformation:
    r"""MoDo (Chen, Fernando, Ying & Chen, "Three-Way Trade-Off in Multi-Objective Learning:
    Optimization, Generalization and Conflict-Avoidance", NeurIPS 2023 / JMLR 2024).

    A stochastic MGDA whose weights take one projected-gradient step per update on
    :math:`\tfrac12\|J^\top\lambda\|^2 + \tfrac\rho2\|\lambda\|^2`, with the Gramian estimated from
    two independent mini-batches so that it is unbiased:

    .. math::
       \lambda \leftarrow \Pi_\Delta\big(\lambda - \gamma (J_1 J_2^\top \lambda + \rho\lambda)\big),
       \qquad \text{update} = \textstyle\sum_t \lambda_t\, g_t

    with :math:`\gamma` = ``learning_rate``. Matches TorchJD 0.18's ``MoDoWeighting(gamma, rho)``
    step for step.

    **Double sampling in mtlx.** Pass the cross-Gramian of two independent batches as the
    ``gramian=`` extra argument and the Jacobian the update is taken from (a third batch, or the
    mean loss of both batches: the paper's Equation 2.9b) as the updates::

      _, jac_1 = engine(params, batch_1)
      _, jac_2 = engine(params, batch_2)
      losses, jac_3 = engine(params, batch_3)
      updates, state = tx.update(jac_3, state, params, gramian=mtlx.cross_gramian(jac_1, jac_2))

    Without ``gramian=``, the Gramian :math:`J J^\top` of the given Jacobian is used (one batch; the
    biased estimate the paper's analysis avoids, but the usual practice).

    Args:
      num_tasks: T (static), the size of :math:`\lambda` in the state.
      learning_rate: :math:`\gamma > 0`, the step size of the weight update (the paper's and
        TorchJD's ``gamma``; TorchJD's default 0.1, LibMTL's 0.001).
      rho: :math:`\rho \ge 0`, the :math:`\ell_2` regularisation of :math:`\lambda`.

    Static under ``optax.inject_hyperparams`` (``static_args``): ``num_tasks``; every other
    numeric argument may be injected.

    Returns:
      A transformation from a per-task Jacobian to one update; accepts ``gramian=`` (any T x T
      matrix, not necessarily symmetric); ``task_losses`` is optional.

    Raises:
      ValueError: for ``num_tasks < 1``, a non-positive ``learning_rate``, a negative ``rho``, or a
        Jacobian whose number of tasks differs from ``num_tasks``.

    Properties: weights on the simplex (the update is a convex combination of the rows);
    permutation-invariant. Not positively homogeneous (the step is not scale-free). Stateful:
    :math:`\lambda`.
    """
    checks.positive_int("num_tasks", num_tasks)
    checks.positive("learning_rate", learning_rate)
    checks.nonnegative("rho", rho)

    def init(params) -> MoDoState:
        del params
        return MoDoState(weights=uniform_weights(num_tasks))

    def weights(stats: Stats, state: MoDoState) -> tuple[jax.Array, MoDoState]:
        gramian = jax.lax.stop_gradient(stats.gramian)
        w = modo_weights(gramian, state.weights, gamma=learning_rate, rho=rho)
        return w, MoDoState(weights=w.astype(state.weights.dtype))

    return as_transform(Weighting("modo", weights, init=init, reads="gramian", num_tasks=num_tasks))
