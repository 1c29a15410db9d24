r"""Gradient-conflict statistics between task gradients: whole shared vector and per layer.

Every statistic of a pair of gradients ``(g_s, g_t)`` used here except the sign disagreement is a
function of their Gramian entries, so the whole computation is: one ``(T, T)`` Gramian per layer
(read from the rows once) and T x T arithmetic.

* cosine similarity :math:`\cos(g_s, g_t) = G_{st} / \sqrt{G_{ss} G_{tt}}` (0 if a row is zero);
* conflict indicators :math:`\cos(g_s, g_t) < S`, one per threshold ``S``;
* gradient magnitude similarity (Yu et al., 2020)
  :math:`2 \|g_s\| \|g_t\| / (\|g_s\|^2 + \|g_t\|^2)` (1 if both rows are zero);
* norm ratio :math:`\|g_s\| / \|g_t\|` (0 if ``g_t`` is zero);
* sign disagreement: the fraction of the layer's parameters where ``g_s`` and ``g_t`` have strictly
  opposite signs, from the sign matrix ``s = sign(J)``:
  :math:`\#\{g_s g_t < 0\} = (|s| |s|^\top - s s^\top)_{st} / 2`.

References: Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020 (cosine
conflicts, magnitude similarity); Shi et al., "Recon: Reducing Conflicting Gradients from the
Root for Multi-Task Learning", ICLR 2023 (per-layer S-conflicts).

A **layer** is the parent of its parameter leaves: the leaf's path keys without the last one,
joined with ``"/"`` (``"encoder/conv1"`` holds ``kernel`` and ``bias``); :func:`layer_of_path`
gives the name. A leaf at the root is a layer by itself, named by its key; a bare array is the
layer ``"params"``. The trailing ``.value`` of a Flax NNX ``Variable`` is not part of the name. Task-specific leaves (``shared_mask`` False)
never enter a statistic; a layer made only of them is left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mtlx._src import jacobians, linalg
from mtlx._src.paths import layer_names, layer_of_path, leaf_layers  # noqa: F401 - public here

PyTree = Any

DEFAULT_THRESHOLDS = (0.0, -0.02, -0.05, -0.1)
_HIGHEST = jax.lax.Precision.HIGHEST


def layer_sizes(params: PyTree) -> dict[str, int]:
    """``{layer: number of parameters}`` (a Flax NNX ``State`` works as is)."""
    sizes: dict[str, int] = {}
    for layer, leaf in zip(leaf_layers(params), jax.tree.leaves(params)):
        sizes[layer] = sizes.get(layer, 0) + int(np.prod(np.shape(leaf), dtype=np.int64))
    return sizes


def pair_indices(num_tasks: int) -> tuple[np.ndarray, np.ndarray]:
    """The task pairs ``s < t`` in row-major order: ``(rows, cols)``, each ``(T (T - 1) / 2,)``."""
    return np.triu_indices(num_tasks, k=1)


def pair_labels(num_tasks: int, task_names: Sequence[str] | None = None) -> list[str]:
    """``"s-t"`` labels (or ``"name_s-name_t"``) in the order of :func:`pair_indices`."""
    names = [str(t) for t in range(num_tasks)] if task_names is None else list(task_names)
    if len(names) != num_tasks:
        raise ValueError(f"{len(names)} task names for {num_tasks} tasks.")
    rows, cols = pair_indices(num_tasks)
    return [f"{names[s]}-{names[t]}" for s, t in zip(rows, cols)]


class PairStatistics(NamedTuple):
    """Statistics of every task pair ``s < t`` (order of :func:`pair_indices`), arrays ``(..., P)``.

    ``conflicts`` has one more trailing axis, one bool per threshold.
    """

    cosine: jax.Array  # (..., pairs) cos(g_s, g_t)
    conflicts: jax.Array  # (..., pairs, S) cos(g_s, g_t) < S, bool
    magnitude_similarity: jax.Array  # (..., pairs) 2 |g_s| |g_t| / (|g_s|^2 + |g_t|^2)
    norm_ratio: jax.Array  # (..., pairs) |g_s| / |g_t|
    sign_disagreement: jax.Array  # (..., pairs) fraction of parameters with g_s g_t < 0, or NaN


def _thresholds_array(thresholds: Sequence[float]) -> jax.Array:
    thresholds = tuple(float(s) for s in thresholds)
    if not thresholds:
        raise ValueError("give at least one conflict threshold S (cos < S counts as a conflict).")
    if any(not -1.0 <= s <= 1.0 for s in thresholds):
        raise ValueError(f"conflict thresholds are cosines, in [-1, 1]; got {thresholds}.")
    return jnp.asarray(thresholds)


def statistics_from_gramian(
    gramian: jax.Array,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    sign_disagreement: jax.Array | None = None,
) -> PairStatistics:
    """Pair statistics from a Gramian ``(..., T, T)`` (a stack of per-layer Gramians works too).

    Args:
      gramian: ``G = J J^T``, shape ``(..., T, T)``.
      thresholds: conflict thresholds ``S``; a pair conflicts at ``S`` when its cosine is ``< S``.
      sign_disagreement: ``(..., pairs)`` fractions from :func:`sign_disagreement_matrix` (they
        need the rows); NaN when not given.

    Returns:
      :class:`PairStatistics` with arrays ``(..., pairs)``.
    """
    gramian = jnp.asarray(gramian)
    if gramian.ndim < 2 or gramian.shape[-1] != gramian.shape[-2]:
        raise ValueError(f"a Gramian has shape (..., T, T); got {gramian.shape}.")
    s_arr = _thresholds_array(thresholds)
    rows, cols = pair_indices(gramian.shape[-1])
    cos = jax.vmap(linalg.cosine_from_gramian)(gramian.reshape(-1, *gramian.shape[-2:]))
    cos = jnp.clip(cos.reshape(gramian.shape), -1.0, 1.0)[..., rows, cols]
    sq = jnp.maximum(jnp.diagonal(gramian, axis1=-2, axis2=-1), 0.0)
    norms = jnp.sqrt(sq)
    n_s, n_t = norms[..., rows], norms[..., cols]
    denom = sq[..., rows] + sq[..., cols]
    # Two zero gradients are equal in magnitude: similarity 1, not 0/0.
    gms = jnp.where(denom > 0, 2.0 * n_s * n_t / jnp.where(denom > 0, denom, 1.0), 1.0)
    ratio = linalg.safe_divide(n_s, n_t)
    if sign_disagreement is None:
        sign_disagreement = jnp.full(cos.shape, jnp.nan, cos.dtype)
    conflicts = cos[..., None] < s_arr.astype(cos.dtype)
    return PairStatistics(cos, conflicts, gms, ratio, sign_disagreement)


def _sign_counts(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(#{x_s x_t < 0}, #params)`` for one task-stacked leaf, from two T x T products."""
    s = jnp.sign(x.reshape(x.shape[0], -1)).astype(jnp.float32)
    both = jnp.matmul(jnp.abs(s), jnp.abs(s).T, precision=_HIGHEST)
    same = jnp.matmul(s, s.T, precision=_HIGHEST)
    return 0.5 * (both - same), jnp.asarray(s.shape[1], jnp.float32)


def sign_disagreement_matrix(rows: PyTree) -> jax.Array:
    """``(T, T)`` fraction of parameters where two rows have strictly opposite signs."""
    leaves = jax.tree.leaves(rows)
    counts = [_sign_counts(x) for x in leaves]
    total = sum(n for _, n in counts)
    return linalg.safe_divide(sum(c for c, _ in counts), total)


class LayerJacobian(NamedTuple):
    """Per-layer Gramians and sign-disagreement fractions of the shared leaves of a Jacobian."""

    layers: tuple[str, ...]  # the layers with at least one shared leaf, in leaf order
    gramians: jax.Array  # (L, T, T)
    sign_disagreement: jax.Array  # (L, T, T) fraction of the layer's parameters, opposite signs
    gramian: jax.Array  # (T, T) over every shared leaf
    total_sign_disagreement: jax.Array  # (T, T) over every shared leaf


def layer_jacobian(jac: jacobians.Jacobian | PyTree, *, signs: bool = True) -> LayerJacobian:
    """Per-layer Gramians of the shared leaves of ``jac`` (plain pytree or :class:`mtlx.Jacobian`).

    Reads ``jac.rows()`` once; pass ``jac.materialize()`` to reuse the same rows afterwards.

    Args:
      jac: the Jacobian: every leaf ``(T, *shape)``, or the engine's lazy Jacobian.
      signs: also count sign disagreements (one more T x T product per leaf); NaN otherwise.
    """
    jac = jacobians.as_jacobian(jac)
    rows = jac.rows()
    leaves_with_path = jax.tree_util.tree_flatten_with_path(rows)[0]
    t = jac.num_tasks
    per_layer: dict[str, list[jax.Array]] = {}
    for (path, leaf), shared in zip(leaves_with_path, jac.shared_mask):
        if shared:
            per_layer.setdefault(layer_of_path(path), []).append(leaf)
    if not per_layer:
        raise ValueError(
            "the Jacobian has no shared leaf: conflict statistics compare the tasks' gradients on "
            "shared parameters."
        )
    names = tuple(per_layer)
    gramians = jnp.stack([sum(jacobians.leaf_gramian(x) for x in per_layer[n]) for n in names])
    if signs:
        counts = {n: [_sign_counts(x) for x in per_layer[n]] for n in names}
        num = jnp.stack([sum(c for c, _ in counts[n]) for n in names])
        den = jnp.stack([sum(k for _, k in counts[n]) for n in names])
        sign = linalg.safe_divide(num, den[:, None, None])
        total_sign = linalg.safe_divide(num.sum(0), den.sum())
    else:
        sign = jnp.full((len(names), t, t), jnp.nan, jnp.float32)
        total_sign = jnp.full((t, t), jnp.nan, jnp.float32)
    return LayerJacobian(names, gramians, sign, gramians.sum(0), total_sign)


def _pairs(matrix: jax.Array) -> jax.Array:
    rows, cols = pair_indices(matrix.shape[-1])
    return matrix[..., rows, cols]


def pairwise_statistics(
    jac: jacobians.Jacobian | PyTree, thresholds: Sequence[float] = DEFAULT_THRESHOLDS
) -> PairStatistics:
    """Pair statistics of the task gradients on the whole shared parameter vector.

    Args:
      jac: the Jacobian (every leaf ``(T, *shape)``, or the engine's :class:`mtlx.Jacobian`).
      thresholds: conflict thresholds ``S``.

    Returns:
      :class:`PairStatistics`, arrays ``(pairs,)`` (``conflicts``: ``(pairs, S)``).

    Properties: the cosine, conflicts, magnitude similarity and sign disagreement are invariant to
      scaling each task's gradient by a positive number (the norm ratio scales accordingly);
      finite for zero rows.
    """
    lj = layer_jacobian(jac)
    return statistics_from_gramian(lj.gramian, thresholds, _pairs(lj.total_sign_disagreement))


def layer_statistics(
    jac: jacobians.Jacobian | PyTree, thresholds: Sequence[float] = DEFAULT_THRESHOLDS
) -> dict[str, PairStatistics]:
    r"""Pair statistics per layer: ``{layer: PairStatistics}`` over the shared leaves of ``jac``.

    A layer's statistics pool its leaves (``kernel`` and ``bias`` of a dense, conv or norm layer
    together): its Gramian is the sum of its leaves' Gramians,
    :math:`G^\ell = \sum_{\text{leaf} \in \ell} J_\text{leaf} J_\text{leaf}^\top`.

    Args:
      jac: the Jacobian (every leaf ``(T, *shape)``, or the engine's :class:`mtlx.Jacobian`).
      thresholds: conflict thresholds ``S``.

    Returns:
      ``{layer: PairStatistics}`` in order of the layers' first leaves, arrays ``(pairs,)``.

    Properties: per-layer cosines are those Recon counts (Shi et al., ICLR 2023); layers made only
      of task-specific leaves are left out; finite for zero rows.
    """
    lj = layer_jacobian(jac)
    stats = statistics_from_gramian(lj.gramians, thresholds, _pairs(lj.sign_disagreement))
    return {name: jax.tree.map(lambda x, i=i: x[i], stats) for i, name in enumerate(lj.layers)}
