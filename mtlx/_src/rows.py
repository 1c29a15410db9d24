"""What the row methods (:func:`mtlx._src.weighting.rows_transform`) share beyond the prologue.

Their state may hold a per-task statistic of every parameter (DB-MTL's and MoCo's moving averages,
ExcessMTL's squared-gradient sums): a params-shaped pytree whose leaves have a leading task axis.
Their task-specific leaves (heads) get their own task's gradient, as in every gradient-aggregation
method.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import jax
import jax.numpy as jnp

from mtlx._src.jacobians import gramian_dtype, weighted_sum
from mtlx._src.weighting import Rows

PyTree = Any


def per_task_zeros(params: PyTree, num_tasks: int, method: str) -> PyTree:
    """Zeros of shape ``(T, *leaf.shape)`` for every leaf of ``params``, in the Gramian's dtype."""
    leaves, treedef = jax.tree.flatten(params)
    if not leaves:
        raise ValueError(
            f"mtlx.{method} keeps a per-task statistic of every parameter: call tx.init(params) "
            "with the parameters (got no array leaves)."
        )
    zeros = [
        jnp.zeros((num_tasks, *jnp.shape(p)), gramian_dtype(jnp.result_type(p))) for p in leaves
    ]
    return jax.tree.unflatten(treedef, zeros)


def check_per_task(per_task: PyTree, rows: Rows, method: str) -> list[jax.Array]:
    """The leaves of a per-task statistic; a ValueError unless they have the rows' shapes."""
    leaves = jax.tree.leaves(per_task)
    shapes = [jnp.shape(x) for x in leaves]
    expected = [jnp.shape(x) for x in rows.leaves]
    if shapes != expected:
        raise ValueError(
            f"mtlx.{method} keeps a per-task statistic of every parameter, and its state was "
            f"initialised for leaves of shapes {shapes} (T, *param) but the Jacobian's rows have "
            f"shapes {expected}: call tx.init(params) with the parameters the Jacobian is taken "
            "with respect to."
        )
    return leaves


def scale_rows(x: jax.Array, scales: jax.Array) -> jax.Array:
    """Row ``t`` of the leaf ``x`` (``(T, *shape)``) times ``scales[t]``, in ``x``'s dtype."""
    return x * scales.astype(x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))


def with_heads(
    rows: Rows, shared_out: Iterable[jax.Array], head_weights: jax.Array | None = None
) -> list[jax.Array]:
    """One update leaf per Jacobian leaf: ``shared_out`` (in order) on the shared leaves.

    A task-specific leaf gets its own task's gradient, the sum of its rows (or
    ``sum_t head_weights[t] J_t``).
    """
    shared_out = iter(shared_out)
    return [
        next(shared_out)
        if shared
        else (x.sum(axis=0) if head_weights is None else weighted_sum(head_weights, x))
        for x, shared in zip(rows.leaves, rows.shared_mask)
    ]


def combine_own(rows: Rows, weights: jax.Array) -> list[jax.Array]:
    """``sum_t weights[t] J_t`` on the shared leaves; each head its own task's gradient."""
    return with_heads(rows, [weighted_sum(weights, x) for x in rows.shared])


def row_norms(leaves: Iterable[jax.Array], num_tasks: int, dtype: Any) -> jax.Array:
    """``(T,)`` norms of the rows spread over ``leaves`` (each ``(T, ...)``), without overflow.

    ``||x_t|| = m_t sqrt(sum (x_t / m_t)^2)`` with ``m_t`` the row's largest ``|entry|``: the
    squares of entries above ~1e19 would overflow float32 (DB-MTL's log-loss gradients
    ``g_t / L_t`` reach that when a loss is small and a gradient large).
    """
    leaves = [x.reshape(num_tasks, -1).astype(dtype) for x in leaves]
    if not leaves:
        return jnp.zeros((num_tasks,), dtype)
    largest = functools.reduce(jnp.maximum, [jnp.max(jnp.abs(x), axis=1) for x in leaves])
    safe = jnp.where(largest > 0, largest, 1.0)[:, None]
    sums = sum(jnp.sum(jnp.square(x / safe), axis=1) for x in leaves)
    return largest * jnp.sqrt(sums)
