"""DB-MTL: dual-balancing multi-task learning (log-loss rows, EMA, norms raised to the largest)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtlx._src import builders, jacobians

PyTree = Any

# LibMTL backpropagates log(L_t + 1e-8) and divides by (||m_t|| + 1e-8).
_EPS = 1e-8


def db_mtl_weights(sq_norms: jax.Array) -> jax.Array:
    r"""DB-MTL's gradient balance ``alpha_t = max_s ||m_s|| / (||m_t|| + 1e-8)``.

    Args:
      sq_norms: ``(T,)`` squared norms of the (EMA'd) log-loss gradients :math:`m_t`.

    Returns:
      ``(T,)`` weights that give every :math:`\alpha_t m_t` the largest norm (0 for zero rows:
      ``0 / 1e-8`` times a zero row).
    """
    norms = jnp.sqrt(jnp.maximum(sq_norms, 0.0))
    return jnp.max(norms) / (norms + _EPS)


class DBMTLState(NamedTuple):
    """State of :func:`db_mtl`."""

    grad_buffer: PyTree  # params-shaped, each leaf (T, *leaf.shape): EMA of the log-loss gradients
    step: jax.Array  # int32: updates taken so far


def _check_buffer(buffer_leaves, row_leaves) -> None:
    shapes = [x.shape for x in buffer_leaves]
    expected = [x.shape for x in row_leaves]
    if shapes != expected:
        raise ValueError(
            "mtlx.db_mtl's state holds one gradient per task and parameter: it was initialised for "
            f"leaves of shapes {shapes} (T, *param) but the Jacobian's rows have shapes {expected}."
            " Call tx.init(params) with the parameters the Jacobian is taken in."
        )


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

    Returns:
      A transformation from a per-task Jacobian to the update above; it needs ``task_losses=``
      (non-negative). Task-specific leaves get their own task's log-loss gradient (no EMA, no
      scaling), as in LibMTL.

    With ``optax.inject_hyperparams``, declare ``static_args=("num_tasks",)``.

    Properties: invariant to a per-task rescaling of the losses (log-loss gradients); every term
      :math:`\alpha_t m_t` has the same norm; the update is not a function of the Gramian; stateful.

    References:
      Lin, Jiang, Ye, Zhang, Chen, Chen, Liu & Kwok, "Dual-Balancing for Multi-Task Learning",
      arXiv:2308.12029, 2023.
    """
    if not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"num_tasks must be a positive int; got {num_tasks!r}.")
    for value, name in ((beta, "beta"), (beta_sigma, "beta_sigma")):
        if not isinstance(value, jax.core.Tracer) and not np.all(np.asarray(value) >= 0):
            raise ValueError(f"{name} must be non-negative; got {value}.")

    def init_fn(params):
        leaves, treedef = jax.tree.flatten(params)
        if not leaves:
            raise ValueError(
                "mtlx.db_mtl keeps a moving average of every task's gradient: call tx.init(params) "
                "with the parameters (got no array leaves)."
            )
        buffer = [
            jnp.zeros(
                (num_tasks, *jnp.shape(p)), jnp.promote_types(jnp.result_type(p), jnp.float32)
            )
            for p in leaves
        ]
        return DBMTLState(
            grad_buffer=jax.tree.unflatten(treedef, buffer), step=jnp.zeros((), jnp.int32)
        )

    def update_fn(updates, state, params=None, *, task_losses=None, **extra_args):
        del params, extra_args
        jac = jacobians.as_jacobian(updates)
        losses = jacobians.check_task_losses(
            task_losses, jac.num_tasks, required=True, method="db_mtl"
        )
        builders.check_num_tasks("db_mtl", num_tasks, jac.num_tasks)
        if not isinstance(losses, jax.core.Tracer) and np.any(np.asarray(losses) < 0):
            raise ValueError(f"mtlx.db_mtl takes log-losses: losses must be >= 0; got {losses}.")
        row_leaves = jax.tree.leaves(jac.rows())
        buffer_leaves, buffer_def = jax.tree.flatten(state.grad_buffer)
        _check_buffer(buffer_leaves, row_leaves)
        step = state.step + 1
        inv_losses = 1.0 / (jnp.maximum(losses, 0.0) + _EPS)

        def log_rows(x):
            return x * inv_losses.astype(x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))

        new_buffer = []
        for x, m, shared in zip(row_leaves, buffer_leaves, jac.shared_mask):
            if shared:
                g = log_rows(x).astype(m.dtype)
                beta_k = beta / step.astype(m.dtype) ** beta_sigma
                m = g + jnp.asarray(beta_k, m.dtype) * (m - g)
            new_buffer.append(m)
        sq_norms = sum(
            jnp.sum(m.reshape(num_tasks, -1) ** 2, axis=1)
            for m, shared in zip(new_buffer, jac.shared_mask)
            if shared
        )
        alpha = db_mtl_weights(jnp.zeros((num_tasks,)) + sq_norms)
        out = [
            jacobians.weighted_sum(alpha, m).astype(x.dtype) if shared else log_rows(x).sum(0)
            for x, m, shared in zip(row_leaves, new_buffer, jac.shared_mask)
        ]
        new_state = DBMTLState(
            grad_buffer=jax.tree.unflatten(buffer_def, new_buffer), step=step.astype(jnp.int32)
        )
        return jax.tree.unflatten(jac.treedef, out), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
