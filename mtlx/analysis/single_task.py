"""Inter-sample vs inter-task gradient conflicts (Elich et al., "Challenging Common Paradigms in
Multi-Task Learning").

Is conflict between *tasks* special? Compare it with the conflict between the gradients of
different *samples* of one task. For ``k`` samples and ``T`` tasks the per-(sample, task)
gradients ``g_{i,t}`` are the ``k T`` rows of one Jacobian (``jax.vmap`` over the VJP of the
``(k, T)`` loss matrix). One ``(kT, kT)`` Gramian then gives both families of pairs:

* inter-task pairs ``(g_{i,s}, g_{i,t})``, ``s < t``: two tasks, the same sample;
* inter-sample pairs ``(g_{i,t}, g_{j,t})``, ``i < j``: two samples, the same task (a single-task
  model has only these, T = 1).

Per step a few random samples (and, for many tasks, a few random tasks) are drawn; the values
collected over an epoch are summarised by their mean, std and 2.5 / 97.5 percentiles.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mtlx._src import jacobians, linalg
from mtlx.analysis import conflict
from mtlx.jacobian import SharedSpec, shared_mask

PyTree = Any


class SampleConflicts(NamedTuple):
    """Pair statistics of per-sample, per-task gradients (shared parameters only)."""

    inter_task: conflict.PairStatistics  # arrays (k T (T - 1) / 2,), sample-major
    inter_sample: conflict.PairStatistics  # arrays (T k (k - 1) / 2,), task-major


def inter_task_pairs(num_samples: int, num_tasks: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(a, b)`` of the inter-task pairs; row ``i T + t`` is sample i, task t."""
    s, t = conflict.pair_indices(num_tasks)
    base = num_tasks * np.arange(num_samples)[:, None]
    return (base + s).ravel(), (base + t).ravel()


def inter_sample_pairs(num_samples: int, num_tasks: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(a, b)`` of the inter-sample pairs (same task, two samples)."""
    i, j = conflict.pair_indices(num_samples)
    task = np.arange(num_tasks)[:, None]
    return (i * num_tasks + task).ravel(), (j * num_tasks + task).ravel()


def _statistics_of_pairs(
    gramian: jax.Array,
    signs: jax.Array,
    pairs: tuple[np.ndarray, np.ndarray],
    thresholds: Sequence[float],
) -> conflict.PairStatistics:
    a, b = pairs
    cos = jnp.clip(linalg.cosine_from_gramian(gramian), -1.0, 1.0)[a, b]
    sq = jnp.maximum(jnp.diagonal(gramian), 0.0)
    denom = sq[a] + sq[b]
    safe = jnp.where(denom > 0, denom, 1.0)
    gms = jnp.where(denom > 0, 2.0 * jnp.sqrt(sq[a] * sq[b]) / safe, 1.0)
    ratio = linalg.safe_divide(jnp.sqrt(sq[a]), jnp.sqrt(sq[b]))
    s_arr = conflict._thresholds_array(thresholds).astype(cos.dtype)
    return conflict.PairStatistics(cos, cos[:, None] < s_arr, gms, ratio, signs[a, b])


def sample_conflicts(
    loss_fn: Callable[[PyTree, PyTree], jax.Array],
    params: PyTree,
    batch: PyTree,
    *,
    shared: SharedSpec = None,
    thresholds: Sequence[float] = conflict.DEFAULT_THRESHOLDS,
    task_indices: jax.Array | Sequence[int] | None = None,
    chunk_size: int | None = None,
) -> SampleConflicts:
    """Inter-task and inter-sample gradient statistics of the samples in ``batch``.

    Args:
      loss_fn: ``loss_fn(params, batch) -> (k, T)`` per-example, per-task losses (``(k,)`` for a
        single-task model). Use a model without batch statistics in this call (BatchNorm in eval
        mode): the per-sample gradients must not depend on the other samples.
      params: the parameters.
      batch: the ``k`` samples (see :func:`subsample`).
      shared: which leaves are shared (as in :func:`mtlx.value_and_jacobian`); only those enter the
        statistics (a task's head gets no gradient from another task: its pairs are trivially
        orthogonal).
      thresholds: conflict thresholds ``S``.
      task_indices: only these tasks (a few random tasks per step when T is large).
      chunk_size: at most this many rows at once (``jax.lax.map``), as in the engine.

    Returns:
      :class:`SampleConflicts`: inter-task pairs sample-major (sample 0's task pairs first),
      inter-sample pairs task-major.

    References:
      Elich, Kirchdorfer, Köhler, Schott, "Challenging Common Paradigms in Multi-Task Learning",
      2024 (arXiv:2311.04698).
    """
    mask = shared_mask(params, shared)
    leaves, treedef = jax.tree.flatten(params)
    if not any(mask):
        raise ValueError("no shared parameter leaf: conflicts are measured on shared parameters.")
    shared_leaves = [x for x, m in zip(leaves, mask) if m]

    def losses_of(shared_in: list[jax.Array]) -> jax.Array:
        it = iter(shared_in)
        full = [next(it) if m else x for x, m in zip(leaves, mask)]
        losses = jnp.asarray(loss_fn(jax.tree.unflatten(treedef, full), batch))
        if losses.ndim == 1:
            losses = losses[:, None]
        if losses.ndim != 2:
            raise ValueError(
                f"loss_fn must return per-example task losses of shape (k, T) or (k,); got "
                f"{losses.shape}."
            )
        if task_indices is not None:
            losses = losses[:, jnp.asarray(task_indices)]
        return losses

    k, t = jax.eval_shape(losses_of, shared_leaves).shape
    flat_losses = lambda p: losses_of(p).reshape(-1)  # noqa: E731
    losses, vjp_fn = jax.vjp(flat_losses, shared_leaves)
    basis = jnp.eye(k * t, dtype=losses.dtype)
    row_fn = lambda e: vjp_fn(e)[0]  # noqa: E731
    if chunk_size is None or chunk_size >= k * t:
        rows = jax.vmap(row_fn)(basis)
    else:
        rows = jax.lax.map(row_fn, basis, batch_size=chunk_size)
    gramian = sum(jacobians.leaf_gramian(x) for x in rows)
    signs = conflict.sign_disagreement_matrix(rows)
    return SampleConflicts(
        inter_task=_statistics_of_pairs(gramian, signs, inter_task_pairs(k, t), thresholds),
        inter_sample=_statistics_of_pairs(gramian, signs, inter_sample_pairs(k, t), thresholds),
    )


def subsample(batch: PyTree, key: jax.Array, num_samples: int) -> PyTree:
    """``num_samples`` distinct random examples of ``batch`` (leading axis), inside jit."""
    sizes = {jnp.shape(x)[0] for x in jax.tree.leaves(batch)}
    if len(sizes) != 1:
        raise ValueError(f"the batch's leaves disagree on the batch size: {sorted(sizes)}.")
    n = sizes.pop()
    if not 1 <= num_samples <= n:
        raise ValueError(f"num_samples must be in [1, {n}] for a batch of {n}; got {num_samples}.")
    index = jax.random.choice(key, n, (num_samples,), replace=False)
    return jax.tree.map(lambda x: x[index], batch)


class Summary(NamedTuple):
    """Summary of the values of one epoch."""

    mean: jax.Array
    std: jax.Array
    p2_5: jax.Array  # 2.5th percentile
    p97_5: jax.Array  # 97.5th percentile
    count: jax.Array  # number of finite values summarised


def summarize(values: jax.Array | np.ndarray, axis: int | None = None) -> Summary:
    """Mean, std and 2.5 / 97.5 percentiles of the finite ``values`` (e.g. one epoch's cosines).

    Non-finite values (NaN: statistics that were not computed) are ignored; an empty set gives NaN.
    """
    x = jnp.asarray(values, jnp.float32)
    finite = jnp.isfinite(x)
    count = finite.sum(axis=axis)
    xm = jnp.where(finite, x, jnp.nan)
    return Summary(
        mean=jnp.nanmean(xm, axis=axis),
        std=jnp.nanstd(xm, axis=axis),
        p2_5=jnp.nanpercentile(xm, 2.5, axis=axis),
        p97_5=jnp.nanpercentile(xm, 97.5, axis=axis),
        count=count,
    )
