r"""Recon: turn the most conflicting shared layers into task-specific ones (Shi et al., ICLR 2023).

The recipe of the paper and its reference code (moukamisama/Recon):

1. **Search.** Train the shared model jointly for a short while (the reference uses equal
   weights) with :func:`mtlx.conflict_monitor` before the weighting. A layer's **S-conflict
   score** is the number of (step, task pair) whose per-layer cosine is below ``S``:
   :math:`\mathrm{score}_S(\ell) = \sum_k \sum_{s<t} [\cos(g^k_{s,\ell}, g^k_{t,\ell}) < S]`.
2. **Select** the top-K layers by score (:func:`select_layers`; or as many as a parameter budget
   allows).
3. **Split** them (:func:`split_params`): each selected leaf gets a leading task axis ``T``, its
   copies initialised from the shared layer (the reference ``deepcopy``-s module 0 of a freshly
   built network) or freshly.
4. **Retrain from scratch** with any weighting method. The split model is the original model run
   as ``jax.vmap(apply, in_axes=(axes, None), axis_size=T)`` (:func:`split_apply`): axis 0 on split
   leaves, ``None`` on shared ones. vmap leaves work that does not depend on a split leaf unbatched,
   so the shared prefix before the first split layer runs once, and any model written as a pure
   ``apply(params, x)`` (a Flax model through ``nnx.split`` / ``nnx.merge``) works unchanged.

The split leaves are task-specific in :func:`mtlx.value_and_jacobian`'s sense (leading T axis, task
t's gradient on copy t): pass ``shared=`` :func:`shared_mask` ``(axes)``.

For training, :func:`split_task_apply` runs task t's pass alone (copy t of the split leaves) for
:func:`mtlx.value_and_jacobian_per_task`: one backward pass through the T passes gives all T rows,
where the engine's batched VJP through :func:`split_apply` pulls each task's cotangent back through
every copy (T² passes after the first split layer; 2-4x slower on a CPU ResNet at T = 4).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mtlx.analysis import conflict, monitor

PyTree = Any


def recon_scores(state: Any, threshold: float | None = None) -> dict[str, int]:
    """Each observed layer's S-conflict score, highest first (ties: layer order).

    Args:
      state: the state of :func:`mtlx.conflict_monitor` (or of a chain containing it) after the
        search run.
      threshold: which ``S`` of the monitor's thresholds; default its first one.

    Returns:
      ``{layer: score}`` sorted by decreasing score.
    """
    mon = monitor._find_state(state)
    thresholds = [float(s) for s in np.asarray(mon.thresholds)]
    index = 0
    if threshold is not None:
        matches = [i for i, s in enumerate(thresholds) if abs(s - float(threshold)) < 1e-6]
        if not matches:
            raise ValueError(
                f"threshold {threshold} was not monitored; the monitor's thresholds are "
                f"{thresholds}."
            )
        index = matches[0]
    counts = monitor.layer_conflict_counts(mon)
    scores = {layer: int(c[index]) for layer, c in counts.items()}
    return dict(sorted(scores.items(), key=lambda kv: -kv[1]))


def select_layers(
    scores: Mapping[str, float],
    *,
    top_k: int | None = None,
    param_budget: int | None = None,
    sizes: Mapping[str, int] | None = None,
    num_tasks: int | None = None,
) -> list[str]:
    """The layers to split: the ``top_k`` highest scores, or the most conflicting within a budget.

    Args:
      scores: ``{layer: score}`` (e.g. :func:`recon_scores`).
      top_k: number of layers (Recon's K).
      param_budget: maximal number of *added* parameters: a layer of ``n`` parameters adds
        ``(T - 1) n``. Layers are taken in decreasing score order; one that would exceed the budget
        is skipped and the next ones are still considered.
      sizes: ``{layer: number of parameters}`` (:func:`mtlx.analysis.layer_sizes`), with a budget.
      num_tasks: T, with a budget.

    Returns:
      Layer names, most conflicting first (ties keep the order of ``scores``).
    """
    if (top_k is None) == (param_budget is None):
        raise ValueError("give exactly one of top_k and param_budget.")
    order = [k for k, _ in sorted(scores.items(), key=lambda kv: -kv[1])]
    if top_k is not None:
        if top_k < 0:
            raise ValueError(f"top_k must be >= 0; got {top_k}.")
        return order[:top_k]
    if sizes is None or num_tasks is None:
        raise ValueError("a param_budget needs the layer sizes and num_tasks.")
    missing = [k for k in order if k not in sizes]
    if missing:
        raise ValueError(f"no size for layers {missing}.")
    chosen, used = [], 0
    for layer in order:
        added = (num_tasks - 1) * int(sizes[layer])
        if used + added <= param_budget:
            chosen.append(layer)
            used += added
    return chosen


def _check_layers(params: PyTree, layers: Iterable[str]) -> set[str]:
    layers = set(layers)
    unknown = layers - set(conflict.layer_names(params))
    if unknown:
        raise ValueError(
            f"layers {sorted(unknown)} are not in the parameters; their layers are "
            f"{list(conflict.layer_names(params))}."
        )
    return layers


def split_axes(params: PyTree, layers: Iterable[str]) -> PyTree:
    """The ``in_axes`` for :func:`split_apply`: 0 on the leaves of ``layers``, None elsewhere."""
    layers = _check_layers(params, layers)
    paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    axes = [0 if conflict.layer_of_path(p) in layers else None for p, _ in paths_leaves]
    return jax.tree.unflatten(treedef, axes)


def _axes_leaves(axes: PyTree, params: PyTree) -> list[int | None]:
    treedef = jax.tree.structure(params)
    leaves = treedef.flatten_up_to(axes)
    if any(a not in (0, None) for a in leaves):
        raise ValueError("split axes are 0 (task-specific) or None (shared).")
    return leaves


def split_params(
    params: PyTree,
    layers: Iterable[str],
    num_tasks: int,
    *,
    init: Literal["copy", "fresh"] = "copy",
    fresh_init: Callable[[jax.Array], PyTree] | None = None,
    key: jax.Array | int = 0,
) -> tuple[PyTree, PyTree]:
    """Turns ``layers`` into task-specific layers: their leaves gain a leading task axis ``T``.

    Args:
      params: the (freshly initialised, for a retrain from scratch) shared parameters.
      layers: layer names (see :mod:`mtlx.analysis.conflict`), e.g. from :func:`select_layers`.
      num_tasks: T.
      init: ``"copy"``: T copies of the shared layer (the reference code); ``"fresh"``: copy t
        comes from ``fresh_init(key_t)``, an independent initialisation per task.
      fresh_init: ``key -> params`` with ``params``' structure (e.g. a model initialiser), for
        ``init="fresh"``.
      key: PRNG key or seed of the fresh initialisations.

    Returns:
      ``(split_params, axes)``: ``axes`` is 0 on split leaves, None on shared ones.
    """
    if num_tasks < 1:
        raise ValueError(f"num_tasks must be >= 1; got {num_tasks}.")
    axes = split_axes(params, layers)
    axes_leaves = _axes_leaves(axes, params)
    leaves, treedef = jax.tree.flatten(params)
    if init == "copy":
        copies = [jnp.broadcast_to(x, (num_tasks, *jnp.shape(x))) for x in leaves]
    elif init == "fresh":
        if fresh_init is None:
            raise ValueError('init="fresh" needs fresh_init: key -> params.')
        key = jax.random.key(key) if isinstance(key, int) else key
        fresh = [fresh_init(k) for k in jax.random.split(key, num_tasks)]
        fresh_leaves = [treedef.flatten_up_to(f) for f in fresh]
        copies = [jnp.stack([f[i] for f in fresh_leaves]) for i in range(len(leaves))]
        for x, c in zip(leaves, copies):
            if c.shape[1:] != jnp.shape(x):
                raise ValueError(
                    f"fresh_init gave a leaf of shape {c.shape[1:]} for {jnp.shape(x)}."
                )
    else:
        raise ValueError(f"init must be 'copy' or 'fresh'; got {init!r}.")
    out = [c if a == 0 else x for x, c, a in zip(leaves, copies, axes_leaves)]
    return jax.tree.unflatten(treedef, out), axes


def shared_mask(axes: PyTree, base: PyTree | None = None) -> PyTree:
    """The ``shared=`` mask for :func:`mtlx.value_and_jacobian`: True where ``axes`` is None.

    Args:
      axes: from :func:`split_params`.
      base: an optional bool tree of the same structure (e.g. False on stacked heads), and-ed in.
    """
    flat = jax.tree.flatten(axes, is_leaf=lambda x: x is None)
    mask = [a is None for a in flat[0]]
    if base is not None:
        base_leaves = jax.tree.leaves(base)
        if len(base_leaves) != len(mask):
            raise ValueError(f"base has {len(base_leaves)} leaves for {len(mask)} axes.")
        mask = [m and bool(b) for m, b in zip(mask, base_leaves)]
    return jax.tree.unflatten(flat[1], mask)


def split_apply(apply_fn: Callable[..., Any], axes: PyTree, num_tasks: int) -> Callable[..., Any]:
    """The split model: ``apply_fn`` vmapped over the task copies, task t's output from copy t.

    Args:
      apply_fn: ``apply_fn(params, *inputs)`` of the original model, returning a tuple (or list) of
        T per-task outputs, or a pytree whose leaves have a leading T axis.
      axes: from :func:`split_params` (all None: exactly the original model).
      num_tasks: T.

    Returns:
      ``(split_params, *inputs) -> outputs`` of the same structure as ``apply_fn``'s.

    .. note:: Computation after the first split layer runs once per copy, for every task's output
      (T times the heads when the heads follow a split layer); only copy t's output t is kept.
    """

    def split_fn(params: PyTree, *inputs: Any) -> Any:
        in_axes = (axes,) + (None,) * len(inputs)
        out = jax.vmap(apply_fn, in_axes=in_axes, axis_size=num_tasks)(params, *inputs)
        if isinstance(out, (tuple, list)) and len(out) == num_tasks:
            picked = [jax.tree.map(lambda x, t=t: x[t], o) for t, o in enumerate(out)]
            return type(out)(picked) if isinstance(out, list) else tuple(picked)
        diag = jnp.arange(num_tasks)
        return jax.tree.map(lambda x: x[diag, diag], out)

    return split_fn


def split_task_apply(
    apply_fn: Callable[..., Any], axes: PyTree, num_tasks: int
) -> Callable[..., Any]:
    """Task t's output of the split model, from one pass of the original model with copy t.

    ``split_task_apply(apply_fn, axes, T)(params, t, *inputs)`` equals
    ``split_apply(apply_fn, axes, T)(params, *inputs)[t]``: the split leaves (axis 0 in ``axes``)
    are replaced by their copy ``t``, the others are used as they are, and output ``t`` of
    ``apply_fn`` is returned. With :func:`mtlx.value_and_jacobian_per_task` (or
    :class:`mtlx.training.FunctionalModel`'s ``task_apply``) the Jacobian costs T passes forward
    and backward instead of the T² backward passes of the batched engine through
    :func:`split_apply`; the prefix before the first split layer runs once per task, though.

    Args:
      apply_fn: ``apply_fn(params, *inputs)`` of the original model, returning a tuple (or list)
        of T per-task outputs, or a pytree whose leaves have a leading T axis.
      axes: from :func:`split_params` (all None: exactly the original model).
      num_tasks: T.

    Returns:
      ``(split_params, t, *inputs) -> output of task t`` (``t`` a Python int in ``[0, T)``).
    """
    if num_tasks < 1:
        raise ValueError(f"num_tasks must be >= 1; got {num_tasks}.")

    def task_fn(params: PyTree, t: int, *inputs: Any) -> Any:
        if not 0 <= t < num_tasks:
            raise ValueError(f"task index {t} is out of range for {num_tasks} tasks.")
        copy = jax.tree.map(
            lambda a, x: x if a is None else x[t], axes, params, is_leaf=lambda a: a is None
        )
        out = apply_fn(copy, *inputs)
        if isinstance(out, (tuple, list)) and len(out) == num_tasks:
            return out[t]
        return jax.tree.map(lambda x: x[t], out)

    return task_fn


class ParameterIncrease(NamedTuple):
    """Parameter count of a split model against the original."""

    original: int  # parameters of the shared model
    split: int  # parameters after splitting
    added: int  # (T - 1) x parameters of the split layers
    fraction: float  # added / original


def parameter_increase(params: PyTree, layers: Iterable[str], num_tasks: int) -> ParameterIncrease:
    """How many parameters splitting ``layers`` of ``params`` (the unsplit ones) adds."""
    layers = _check_layers(params, layers)
    sizes = conflict.layer_sizes(params)
    original = sum(sizes.values())
    added = (num_tasks - 1) * sum(sizes[k] for k in layers)
    return ParameterIncrease(original, original + added, added, added / max(original, 1))


def conflict_fraction(
    state: Any,
    layers: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    threshold: float | None = None,
) -> float:
    """Fraction of observed (step, task pair, layer) with per-layer cos < S, pooled over ``layers``.

    Compare a model before and after splitting on the same remaining shared layers: pass the
    split layers as ``exclude`` for both.
    """
    mon = monitor._find_state(state)
    thresholds = [float(s) for s in np.asarray(mon.thresholds)]
    index = 0 if threshold is None else int(np.argmin(np.abs(np.asarray(thresholds) - threshold)))
    counts = monitor.layer_conflict_counts(mon)
    keep = [k for k in (counts if layers is None else layers) if k in counts and k not in exclude]
    conflicts = sum(int(counts[k][index]) for k in keep)
    observations = sum(int(mon.layer_observations[k]) for k in keep)
    return conflicts / max(observations, 1)


# ---------------------------------------------------------------------------------------------
# The paper's controls: random layers (RSL), random parameters (RSP), first-K and last-K layers,
# and the search's stability.


def _check_k(k: int, candidates: Sequence[str], what: str) -> list[str]:
    candidates = list(candidates)
    if len(set(candidates)) != len(candidates):
        raise ValueError(f"the candidate layers repeat a name: {candidates}.")
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 0:
        raise ValueError(f"{what}: K must be a non-negative int; got {k!r}.")
    if k > len(candidates):
        raise ValueError(f"{what}: K = {k} is larger than the {len(candidates)} candidate layers.")
    return candidates


def _key(key: jax.Array | int) -> jax.Array:
    return jax.random.key(key) if isinstance(key, (int, np.integer)) else key


def random_layers(candidates: Sequence[str], k: int, *, key: jax.Array | int) -> list[str]:
    """RSL: ``k`` layers drawn uniformly without replacement from ``candidates``.

    The control of Shi et al. (ICLR 2023, "Recon"; random selection of layers): as many layers as
    Recon splits, chosen without looking at conflicts. Returned in the candidates' order.

    Raises:
      ValueError: ``k`` negative or larger than the number of candidates, repeated candidates.
    """
    candidates = _check_k(k, candidates, "random_layers")
    chosen = jax.random.choice(_key(key), len(candidates), (int(k),), replace=False)
    picked = set(np.asarray(chosen).tolist())
    return [c for i, c in enumerate(candidates) if i in picked]


def first_layers(order: Sequence[str], k: int) -> list[str]:
    """The first ``k`` layers of ``order`` (e.g. :func:`layer_order`: the input side).

    An ablation of Recon (Shi et al., ICLR 2023): split the bottom layers, as a fixed
    shared-bottom / task-specific-top design would, instead of the most conflicting ones.

    Raises:
      ValueError: ``k`` negative or larger than ``len(order)``, repeated names.
    """
    return _check_k(k, order, "first_layers")[: int(k)]


def last_layers(order: Sequence[str], k: int) -> list[str]:
    """The last ``k`` layers of ``order`` (the output side; the deepest shared layers).

    The counterpart of :func:`first_layers`: a wider task-specific top, the usual alternative to
    Recon's conflict-driven choice. Same errors.
    """
    order = _check_k(k, order, "last_layers")
    return order[len(order) - int(k) :]


def layer_order(apply_fn: Callable[..., Any], params: PyTree, *inputs: Any) -> list[str]:
    """The layers of ``params`` in the order the forward pass first reads them.

    Layer names (:func:`mtlx.analysis.layer_names`) follow the tree's key order (alphabetical for
    a Flax state: ``blocks`` before ``stem``); first-K / last-K need the network's order. This
    traces ``apply_fn(params, *inputs)`` once (``jax.make_jaxpr``, no computation) and orders the
    layers by the first top-level equation that reads one of their leaves.

    Caveats: a leaf read only inside a nested call (e.g. a ``jax.jit``-ed sub-function) counts at
    that call; layers never read come last, in tree order.
    """
    names = conflict.layer_names(params)
    leaf_layers = [
        conflict.layer_of_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]
    ]
    jaxpr = jax.make_jaxpr(apply_fn)(params, *inputs).jaxpr
    invars = jaxpr.invars[: len(leaf_layers)]
    first: dict[Any, int] = {}
    for i, eqn in enumerate(jaxpr.eqns):
        for v in eqn.invars:
            if not hasattr(v, "val") and v not in first:  # skip literals
                first[v] = i
    big = len(jaxpr.eqns) + 1
    position: dict[str, int] = {}
    for var, layer in zip(invars, leaf_layers):
        position[layer] = min(position.get(layer, big), first.get(var, big))
    return sorted(names, key=lambda n: (position[n], names.index(n)))


def random_parameter_mask(
    params: PyTree, count: int, *, key: jax.Array | int, layers: Iterable[str] | None = None
) -> PyTree:
    """RSP: a bool tree with exactly ``count`` True entries, uniform over the entries of ``layers``.

    The control of Shi et al. (ICLR 2023, "Recon"; random selection of parameters): as many
    individual parameters as Recon's split layers hold, scattered over the shared layers, made
    task-specific with :func:`split_entries`.

    Args:
      params: the parameters.
      count: how many entries (e.g. the parameters of Recon's layers).
      key: PRNG key or seed.
      layers: the layers to draw from (default: all).

    Raises:
      ValueError: ``count`` negative or more than the eligible entries, unknown layers.
    """
    allowed = set(conflict.layer_names(params)) if layers is None else _check_layers(params, layers)
    paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    sizes = [
        int(np.size(x)) if conflict.layer_of_path(p) in allowed else 0 for p, x in paths_leaves
    ]
    total = sum(sizes)
    if not isinstance(count, (int, np.integer)) or count < 0 or count > total:
        raise ValueError(f"count must be an int in [0, {total}] (eligible entries); got {count!r}.")
    chosen = np.zeros(total, bool)
    chosen[np.asarray(jax.random.choice(_key(key), total, (int(count),), replace=False))] = True
    masks, start = [], 0
    for (_, x), n in zip(paths_leaves, sizes):
        masks.append(
            chosen[start : start + n].reshape(np.shape(x)) if n else np.zeros(np.shape(x), bool)
        )
        start += n
    return jax.tree.unflatten(treedef, masks)


ENTRIES_KEY = "task_entries"  # where split_entries puts the task-specific copies of single entries


def split_entries(
    apply_fn: Callable[..., Any],
    params: Mapping[str, Any],
    mask: PyTree,
    num_tasks: int,
) -> tuple[dict[str, Any], Callable[..., Any], Callable[..., Any]]:
    """Makes single parameter entries task-specific (RSP's split; Recon splits whole layers).

    Each masked entry gets T copies (initialised from its shared value) under
    ``params[ENTRIES_KEY]`` (``{"leaf<i>": (T, n_i)}``, one array per leaf with masked entries);
    task t's forward pass reads copy t in place of the shared entry. The shared entry itself is
    then unused (zero gradient): it adds nothing to a shared-gradient cosine.
    ``T x count`` arrays are stored, ``(T - 1) x count`` parameters added in effect.

    Args:
      apply_fn: ``apply_fn(params, *inputs)`` of the original model (T outputs, as for
        :func:`split_apply`).
      params: a mapping of the original parameters (without the key ``ENTRIES_KEY``).
      mask: a bool tree of ``params``' structure (e.g. :func:`random_parameter_mask`).
      num_tasks: T.

    Returns:
      ``(split_params, split_fn, task_fn)``: ``split_fn(split_params, *inputs)`` gives the T
      outputs (:func:`split_apply`), ``task_fn(split_params, t, *inputs)`` task t's alone
      (:func:`split_task_apply`, for training); the leaves under ``ENTRIES_KEY`` are
      task-specific (leading T axis), the others keep their paths.
    """
    if num_tasks < 1:
        raise ValueError(f"num_tasks must be >= 1; got {num_tasks}.")
    if not isinstance(params, Mapping) or ENTRIES_KEY in params:
        raise ValueError(f"params must be a mapping without the key {ENTRIES_KEY!r}.")
    leaves, treedef = jax.tree.flatten(params)
    mask_leaves = treedef.flatten_up_to(mask)
    index = {}
    for i, (x, m) in enumerate(zip(leaves, mask_leaves)):
        m = np.asarray(m, bool)
        if m.shape != np.shape(x):
            raise ValueError(f"mask leaf {i} has shape {m.shape} for a leaf {np.shape(x)}.")
        if m.any():
            index[f"leaf{i}"] = (i, np.flatnonzero(m.ravel()))
    entries = {
        name: jnp.broadcast_to(jnp.ravel(leaves[i])[idx], (num_tasks, idx.size))
        for name, (i, idx) in index.items()
    }
    split = {**dict(params), ENTRIES_KEY: entries}

    def with_entries(p: Mapping[str, Any], *inputs: Any) -> Any:
        p = dict(p)
        own = p.pop(ENTRIES_KEY)
        base = jax.tree.leaves(p)
        for name, (i, idx) in index.items():
            base[i] = jnp.ravel(base[i]).at[idx].set(own[name]).reshape(jnp.shape(base[i]))
        return apply_fn(jax.tree.unflatten(jax.tree.structure(p), base), *inputs)

    axes = jax.tree.map(lambda _: None, dict(params))
    axes[ENTRIES_KEY] = {name: 0 for name in entries}
    return (
        split,
        split_apply(with_entries, axes, num_tasks),
        split_task_apply(with_entries, axes, num_tasks),
    )


def layer_scores_from_gramians(
    gramians: Mapping[str, Any], threshold: float = 0.0, *, steps: int | None = None
) -> dict[str, int]:
    """Recon's S-conflict score of every layer, from per-step per-layer Gramians.

    :math:`\\mathrm{score}_S(\\ell) = \\sum_k \\sum_{s<t} [\\cos(g^k_{s,\\ell}, g^k_{t,\\ell}) < S]`
    (Shi et al., ICLR 2023), as :func:`recon_scores` reads from a monitor's running counts, but
    over the first ``steps`` steps of a recorded run: one long run gives the scores of every
    shorter search of the same seed (the same batches and, with a constant learning rate, the
    same first steps).

    Args:
      gramians: ``{layer: (steps, T, T)}`` (:func:`mtlx.analysis.last_layer_gramians` recorded by
        an ``observe`` hook). Layers whose Gramians are all zero (never observed) are left out.
      threshold: S.
      steps: use the first ``steps`` steps (default: all).

    Returns:
      ``{layer: score}``, highest first (ties: the order of ``gramians``).
    """
    out = {}
    for layer, g in gramians.items():
        g = np.asarray(g)
        if g.ndim != 3 or g.shape[-1] != g.shape[-2]:
            raise ValueError(f"layer {layer!r}: Gramians (steps, T, T) expected; got {g.shape}.")
        if steps is not None:
            if steps < 1 or steps > g.shape[0]:
                raise ValueError(f"steps must be in [1, {g.shape[0]}]; got {steps}.")
            g = g[:steps]
        if not np.any(g):
            continue
        cos = np.asarray(conflict.statistics_from_gramian(jnp.asarray(g), (0.0,)).cosine)
        out[layer] = int(np.sum(cos < threshold))
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def jaccard(a: Iterable[str], b: Iterable[str]) -> float:
    """``|A ∩ B| / |A ∪ B|`` of two layer selections (1 for two empty sets): the overlap of Recon's
    top-K across seeds, weighting methods or search lengths."""
    a, b = set(a), set(b)
    return 1.0 if not (a | b) else len(a & b) / len(a | b)
