"""PCGrad: projecting conflicting gradients."""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp

from mtlx._src import prng
from mtlx._src.weighting import Stats, Weighting, WeightingTransformation, as_transform


def pcgrad_weights(gramian: jax.Array, key: jax.Array) -> jax.Array:
    r"""Weights ``w`` (T,) with ``sum_t w_t g_t`` equal to the sum of PCGrad's projected gradients.

    Projected gradient ``i`` is kept as coefficients ``c`` over the rows (``g_i^PC = J^T c``); a
    projection onto the normal plane of ``g_j`` subtracts ``(<g_i^PC, g_j> / ||g_j||^2) e_j`` from
    ``c``, so only ``G`` is read. Each task gets its own random order of the others (as in the
    paper and TorchJD); all T projections run at once under ``jax.vmap``.
    """
    num_tasks = gramian.shape[0]

    def project(i, key_i):
        def step(c, j):
            dot = gramian[j] @ c
            sq_norm = gramian[j, j]
            # A zero row cannot be conflicted with (TorchJD would divide 0 by 0 here).
            conflict = (j != i) & (dot < 0) & (sq_norm > 0)
            return c.at[j].add(
                jnp.where(conflict, -dot / jnp.where(sq_norm > 0, sq_norm, 1.0), 0.0)
            ), None

        c0 = jax.nn.one_hot(i, num_tasks, dtype=gramian.dtype)
        return jax.lax.scan(step, c0, jax.random.permutation(key_i, num_tasks))[0]

    keys = jax.random.split(key, num_tasks)
    return jax.vmap(project)(jnp.arange(num_tasks), keys).sum(axis=0)


class PCGradState(NamedTuple):
    """State of :func:`pcgrad`."""

    key: jax.Array  # typed PRNG key, split once per step for the task orders


def pcgrad(
    seed: int | jax.Array = 0, reduction: Literal["sum", "mean"] = "sum"
) -> WeightingTransformation:
    r"""Projecting conflicting gradients (PCGrad), Algorithm 1 of Yu et al. (NeurIPS 2020).

    Each task gradient :math:`g_i` is projected, in a random order of the other tasks, onto the
    normal plane of every :math:`g_j` it conflicts with:
    :math:`g_i \leftarrow g_i - \frac{\min(0, g_i^\top g_j)}{\|g_j\|^2} g_j`.
    The update is the **sum** of the projected gradients, as in the paper, TorchJD and LibMTL;
    ``reduction="mean"`` divides it by T. Reads only the Gramian.

    Args:
      seed: int seed or PRNG key for the task orders (kept in the state).
      reduction: ``"sum"`` (default) or ``"mean"`` of the projected gradients.

    Static under ``optax.inject_hyperparams`` (``static_args``): none; every numeric argument
    may be injected.

    Properties: permutation-invariant in law, positively homogeneous, equal to the plain sum when no
    pair conflicts, non-conflicting for T = 2.

    References:
      Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020.
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean'; got {reduction!r}.")

    def init_fn(params):
        del params
        return PCGradState(key=prng.as_key(seed))

    def weights(stats: Stats, state: PCGradState) -> tuple[jax.Array, PCGradState]:
        next_key, key = jax.random.split(state.key)
        w = pcgrad_weights(stats.gramian, key)
        if reduction == "mean":
            w = w / stats.num_tasks
        return w, PCGradState(key=next_key)

    return as_transform(Weighting("pcgrad", weights, init=init_fn, reads="gramian"))
