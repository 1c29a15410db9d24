"""DB-MTL: dual-balancing multi-task learning (log-loss rows, EMA, norms raised to the largest)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtlx._src import checks
from mtlx._src.jacobians import weighted_sum
from mtlx._src.rows import check_per_task, per_task_zeros, row_norms, scale_rows, with_heads
from mtlx._src.tolerances import REFERENCE_EPS
from mtlx._src.weighting import Rows, rows_transform

PyTree = Any


def db_mtl_weights(sq_norms: jax.Array) -> jax.Array:
    r"""DB-MTL's gradient balance ``alpha_t = max_s ||m_s|| / (||m_t|| + 1e-8)``.

    Args:
      sq_norms: ``(T,)`` squared norms of the (EMA'd) log-loss gradients :math:`m_t`.

    Returns:
      ``(T,)`` weights that give every :math:`\alpha_t m_t` the largest norm (0 for zero rows:
      ``0 / 1e-8`` times a zero row).
    """
    return db_mtl_balance(jnp.sqrt(jnp.maximum(sq_norms, 0.0)))


def db_mtl_balance(norms: jax.Array) -> jax.Array:
    """:func:`db_mtl_weights` from the norms themselves (their squares may overflow)."""
    return jnp.max(norms) / (norms + REFERENCE_EPS)  # LibMTL's guard


class DBMTLState(NamedTuple):
    """State of :func:`db_mtl`."""

    grad_buffer: PyTree  # params-shaped, each leaf (T, *leaf.shape): EMA of the log-loss gradients
    count: jax.Array  # int32: updates taken so far


def db_mtl(
    num_tasks: int, beta: jax.typing.ArrayLike = 0.9, beta_sigma: jax.typing.ArrayLike = 0.0
) -> optax.GradientTransformationExtraArgs:
    r"""Dual-Balancing Multi-Task Learning (DB-MTL), Lin et al. (arXiv 2023), LibMTL's ``DB_MTL``.

    Loss-scale balance: every task's gradient is taken of its log-loss,
    :math:`\nabla \log(L_t + \epsilon) = g_t / (L_t + \epsilon)`. Gradient-magnitude balance: an
    exponential moving average of those, then every task is scaled to the largest norm,

    .. math::
       m_t \leftarrow \hat g_t + \beta_k (m_t - \hat g_t), \quad \beta_k = \beta / k^{\sigma},
       \qquad \text{update} = \sum_t \frac{\max_s \|m_s\|}{\|m_t\| + \epsilon}\, m_t,

    at step k (from 1), norms over the shared parameters, :math:`\epsilon = 10^{-8}`. As LibMTL's
    ``DB_MTL``.

    **Cost**: it reads the Jacobian's rows (**T backward passes**) and its state holds one
    gradient per task (**T times the parameters' memory**): ``init`` needs the parameters.

    Args:
      num_tasks: T.
      beta: EMA coefficient :math:`\beta` (LibMTL: 0.9).
      beta_sigma: decay exponent :math:`\sigma` of the EMA coefficient (LibMTL: 0, a constant
        :math:`\beta`).

    Static under ``optax.inject_hyperparams`` (``static_args``): ``num_tasks``; every other
    numeric argument may be injected.

    Returns:
      A transformation from a per-task Jacobian to the update above; it needs ``task_losses=``
      (positive). Task-specific leaves get their own task's log-loss gradient (no EMA, no
      scaling), as in LibMTL.

    Raises:
      ValueError: (concrete losses, outside ``jax.jit``) a loss is zero or negative. Inside
        ``jax.jit`` nothing can be checked: a negative loss counts as 0, and a zero loss divides
        its gradient by 1e-8 (LibMTL's guard), so the update is ~1e8 times the gradient; the
        result stays finite.

    With ``optax.inject_hyperparams``, declare ``static_args=("num_tasks",)``.

    Properties: invariant to a per-task rescaling of the losses (log-loss gradients); every term
      :math:`\alpha_t m_t` has the same norm; the update is not a function of the Gramian; stateful.

    References:
      Lin, Jiang, Ye, Zhang, Chen, Chen, Liu & Kwok, "Dual-Balancing for Multi-Task Learning",
      arXiv:2308.12029, 2023.
    """
    checks.positive_int("num_tasks", num_tasks)
    checks.nonnegative("beta", beta)
    checks.nonnegative("beta_sigma", beta_sigma)

    def init(params) -> DBMTLState:
        return DBMTLState(
            grad_buffer=per_task_zeros(params, num_tasks, "db_mtl"), count=jnp.zeros((), jnp.int32)
        )

    def update_rows(rows: Rows, state: DBMTLState) -> tuple[list[jax.Array], DBMTLState]:
        losses = rows.losses
        if not checks.is_traced(losses) and np.any(np.asarray(losses) <= 0):
            raise ValueError(
                "mtlx.db_mtl takes the gradients of log-losses, g_t / (L_t + 1e-8): every loss must "
                f"be > 0 (a zero loss would scale its gradient, and through the magnitude balance "
                f"the whole update, by ~1e8); got {losses}. Use a method without logarithms for "
                "losses that reach 0, or add a positive floor to the loss."
            )
        buffer_leaves = check_per_task(state.grad_buffer, rows, "db_mtl")
        count = state.count + 1
        # LibMTL backpropagates log(L_t + 1e-8): the rows divided by the losses.
        inv_losses = 1.0 / (jnp.maximum(losses, 0.0) + REFERENCE_EPS)
        new_buffer = []
        for x, m, shared in zip(rows.leaves, buffer_leaves, rows.shared_mask):
            if shared:
                g = scale_rows(x, inv_losses).astype(m.dtype)
                beta_k = beta / count.astype(m.dtype) ** beta_sigma
                m = g + jnp.asarray(beta_k, m.dtype) * (m - g)
            new_buffer.append(m)
        shared_buffer = [m for m, shared in zip(new_buffer, rows.shared_mask) if shared]
        norms = row_norms(shared_buffer, num_tasks, jnp.result_type(*shared_buffer))
        alpha = db_mtl_balance(norms)
        shared_out = [
            weighted_sum(alpha, m).astype(x.dtype) for x, m in zip(rows.shared, shared_buffer)
        ]
        new_state = DBMTLState(
            grad_buffer=jax.tree.unflatten(jax.tree.structure(state.grad_buffer), new_buffer),
            count=count.astype(jnp.int32),
        )
        # Heads get their own task's log-loss gradient (no EMA, no scaling), as in LibMTL.
        return with_heads(rows, shared_out, head_weights=inv_losses), new_state

    return rows_transform(
        update_rows, name="db_mtl", init=init, needs_losses=True, num_tasks=num_tasks
    )
