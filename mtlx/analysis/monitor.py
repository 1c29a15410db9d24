"""``conflict_monitor``: an identity optax transform that counts per-layer gradient conflicts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtlx._src import jacobians
from mtlx.analysis import conflict

PyTree = Any


class ConflictMonitorState(NamedTuple):
    """State of :func:`conflict_monitor`: running sums over the monitored (step, task pair)s.

    The ``layer_*`` fields are dicts ``{layer: array}`` keyed by layer name (see
    :mod:`mtlx.analysis.conflict`), so ``optax.tree.get`` and checkpointing see named leaves.
    """

    count: jax.Array  # int32 (): updates seen (monitored or not)
    steps: jax.Array  # int32 (): monitored updates
    thresholds: jax.Array  # float32 (S,): the conflict thresholds, cos < S
    layer_counts: dict[str, jax.Array]  # int32 (S,): (step, pair)s with per-layer cos < S
    layer_observations: dict[str, jax.Array]  # int32 (): (step, pair)s observed on the layer
    layer_cosine_sum: dict[str, jax.Array]  # float32 (): sum of cos over (step, pair)s
    layer_cosine_sq_sum: dict[str, jax.Array]  # float32 (): sum of cos^2
    layer_magnitude_similarity_sum: dict[str, jax.Array]  # float32 ()
    layer_sign_disagreement_sum: dict[str, jax.Array]  # float32 ()
    layer_last_cosine: dict[str, jax.Array]  # float32 (): mean over pairs, last monitored step
    counts: jax.Array  # int32 (S,): the same as layer_counts, whole shared parameter vector
    observations: jax.Array  # int32 ()
    cosine_sum: jax.Array  # float32 ()
    cosine_sq_sum: jax.Array  # float32 ()
    # float32 (T, T) per layer: the Gramian of the last monitored step (only with ``num_tasks``;
    # an empty dict otherwise). Sums of per-layer Gramians are Gramians of concatenated layers, so
    # an ``observe`` hook that records these can give the cosine over any set of layers afterwards.
    layer_last_gramian: dict[str, jax.Array]


# The paper's cosine bins (Recon, Shi et al., ICLR 2023): (−0.01, −1], (−0.02, −1], (−0.05, −1],
# (−0.1, −1], each the share of (step, task pair) whose whole-shared-vector cosine is below the edge.
RECON_COSINE_BINS = (-0.01, -0.02, -0.05, -0.1)


def conflict_monitor(
    thresholds: Sequence[float] = conflict.DEFAULT_THRESHOLDS,
    *,
    every: int = 1,
    signs: bool = True,
    num_tasks: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""An identity transform whose state accumulates per-layer gradient-conflict statistics.

    Place it before the weighting:
    ``optax.chain(mtlx.conflict_monitor(), mtlx.pcgrad(), optax.adam(1e-3))``. It receives the
    Jacobian (a plain task-stacked pytree or the engine's :class:`mtlx.Jacobian`) and passes it on
    unchanged in value. On every ``every``-th update it reads the rows once; with ``every=1`` it
    hands them on materialised (a :class:`mtlx.StackedJacobian`), so the Gramian method that
    follows reads them instead of computing them again,
    computes each layer's ``(T, T)`` Gramian over the shared leaves and adds, per layer, for every
    task pair ``s < t``: the indicators :math:`\cos(g_s, g_t) < S` for each threshold ``S`` (the
    S-conflict score of Recon, Shi et al., ICLR 2023), the cosine and its square, the gradient
    magnitude similarity and the sign-disagreement fraction. Read the result with
    :func:`layer_conflict_counts` and :func:`layer_conflict_summary`.

    Args:
      thresholds: conflict thresholds ``S`` (cosines in ``[-1, 1]``); Recon uses
        ``(0.0, -0.02, -0.05, -0.1)``.
      every: monitor one update in ``every`` (``jax.lax.cond`` on the state's counter; on a skipped
        update no row is computed). With ``every > 1`` the rows the monitor reads are not shared
        with the weighting that follows (they are computed inside the ``cond`` branch). Before a
        loss-only weighting (EW, RLW, UW, ...), which needs one backward pass, the monitor's rows
        are T more: ``every > 1`` keeps the average step cheap.
      signs: also accumulate the sign-disagreement fraction (one more T x T product per leaf);
        without it the sign sums stay 0.
      num_tasks: T; when given, the state also keeps each layer's ``(T, T)`` Gramian of the last
        monitored step (``layer_last_gramian``, read by :func:`last_layer_gramians` inside an
        ``observe`` hook: per-step Gramians at no extra backward pass).

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``init(params)`` needs the parameters (their
      tree gives the layers), ``update`` returns the Jacobian unchanged.

    Properties: identity on the updates; works inside ``jax.jit``, ``jax.vmap`` and
      ``jax.lax.scan``; task-specific leaves (``jac.shared_mask`` False) are left out, as are
      layers made only of them; T = 1 has no pair and counts nothing.

    References:
      Shi et al., "Recon: Reducing Conflicting Gradients from the Root for Multi-Task Learning",
      ICLR 2023.
    """
    s_tuple = tuple(float(s) for s in thresholds)
    conflict._thresholds_array(s_tuple)  # validates at construction, not at the first update
    if not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be a positive int; got {every!r}.")
    if num_tasks is not None and (not isinstance(num_tasks, int) or num_tasks < 1):
        raise ValueError(f"num_tasks must be a positive int or None; got {num_tasks!r}.")
    num_s = len(s_tuple)

    def init_fn(params: PyTree) -> ConflictMonitorState:
        if params is None or not jax.tree.leaves(params):
            raise ValueError(
                "conflict_monitor.init needs the parameters: their tree names the layers."
            )
        names = conflict.layer_names(params)
        zeros_i = lambda shape=(): {n: jnp.zeros(shape, jnp.int32) for n in names}  # noqa: E731
        zeros_f = lambda: {n: jnp.zeros((), jnp.float32) for n in names}  # noqa: E731
        return ConflictMonitorState(
            count=jnp.zeros((), jnp.int32),
            steps=jnp.zeros((), jnp.int32),
            thresholds=jnp.asarray(s_tuple, jnp.float32),
            layer_counts=zeros_i((num_s,)),
            layer_observations=zeros_i(),
            layer_cosine_sum=zeros_f(),
            layer_cosine_sq_sum=zeros_f(),
            layer_magnitude_similarity_sum=zeros_f(),
            layer_sign_disagreement_sum=zeros_f(),
            layer_last_cosine=zeros_f(),
            counts=jnp.zeros((num_s,), jnp.int32),
            observations=jnp.zeros((), jnp.int32),
            cosine_sum=jnp.zeros((), jnp.float32),
            cosine_sq_sum=jnp.zeros((), jnp.float32),
            layer_last_gramian={}
            if num_tasks is None
            else {n: jnp.zeros((num_tasks, num_tasks), jnp.float32) for n in names},
        )

    def observe(jac: jacobians.Jacobian, state: ConflictMonitorState) -> ConflictMonitorState:
        lj = conflict.layer_jacobian(jac, signs=signs)
        unknown = [n for n in lj.layers if n not in state.layer_counts]
        if unknown:
            raise ValueError(
                f"the Jacobian has layers {unknown} that the parameters given to "
                "conflict_monitor.init do not have: init with the parameters being trained."
            )
        rows, cols = conflict.pair_indices(jac.num_tasks)
        num_pairs = len(rows)
        signs_pairs = lj.sign_disagreement[:, rows, cols]
        stats = conflict.statistics_from_gramian(lj.gramians, s_tuple, signs_pairs)
        total = conflict.statistics_from_gramian(lj.gramian, s_tuple)
        f32 = lambda x: x.astype(jnp.float32)  # noqa: E731
        sums = {
            "cos": f32(stats.cosine).sum(-1),
            "cos2": f32(stats.cosine**2).sum(-1),
            "gms": f32(stats.magnitude_similarity).sum(-1),
            "sign": jnp.nan_to_num(f32(stats.sign_disagreement)).sum(-1),
            "last": f32(stats.cosine).sum(-1) / max(num_pairs, 1),
            "counts": stats.conflicts.sum(-2).astype(jnp.int32),
        }

        def add(field: dict, key: str) -> dict:
            out = dict(field)
            for i, name in enumerate(lj.layers):
                out[name] = field[name] + sums[key][i]
            return out

        if num_tasks is not None and jac.num_tasks != num_tasks:
            raise ValueError(
                f"conflict_monitor(num_tasks={num_tasks}) got a Jacobian of {jac.num_tasks} tasks."
            )
        last = dict(state.layer_last_cosine)
        obs = dict(state.layer_observations)
        gram = dict(state.layer_last_gramian)
        for i, name in enumerate(lj.layers):
            last[name] = sums["last"][i]
            obs[name] = obs[name] + num_pairs
            if num_tasks is not None:
                gram[name] = f32(lj.gramians[i])
        return state._replace(
            steps=state.steps + 1,
            layer_counts=add(state.layer_counts, "counts"),
            layer_observations=obs,
            layer_cosine_sum=add(state.layer_cosine_sum, "cos"),
            layer_cosine_sq_sum=add(state.layer_cosine_sq_sum, "cos2"),
            layer_magnitude_similarity_sum=add(state.layer_magnitude_similarity_sum, "gms"),
            layer_sign_disagreement_sum=add(state.layer_sign_disagreement_sum, "sign"),
            layer_last_cosine=last,
            layer_last_gramian=gram,
            counts=state.counts + total.conflicts.sum(-2).astype(jnp.int32),
            observations=state.observations + num_pairs,
            cosine_sum=state.cosine_sum + f32(total.cosine).sum(),
            cosine_sq_sum=state.cosine_sq_sum + f32(total.cosine**2).sum(),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        jac = jacobians.as_jacobian(updates)
        if every == 1:
            # Materialise the rows once and hand them on by value: the weighting that follows
            # reads these rows (its Gramian, its combination) instead of computing them again.
            rows = jac.materialize()
            new_state = observe(rows, state)
            if isinstance(updates, jacobians.Jacobian) and jac.rows_stand_in:
                updates = rows  # a plain task-stacked pytree is passed on as it came
            # A feature-space Jacobian is handed on as it came: its method must read the
            # features' Gramian, not the rows' (the monitor itself measures the parameter rows).
        else:
            # Rows are computed only inside the monitored branch; the Jacobian passes on lazy.
            new_state = jax.lax.cond(state.count % every == 0, observe, lambda j, s: s, jac, state)
        return updates, new_state._replace(count=state.count + 1)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _find_state(state: Any) -> ConflictMonitorState:
    if isinstance(state, ConflictMonitorState):
        return state
    if isinstance(state, (tuple, list)):
        for s in state:
            try:
                return _find_state(s)
            except ValueError:
                pass
    raise ValueError(
        "no ConflictMonitorState found: pass the state of mtlx.conflict_monitor (or of an "
        "optax.chain that contains it)."
    )


def layer_conflict_counts(state: Any, *, observed_only: bool = True) -> dict[str, np.ndarray]:
    """``{layer: counts}``, one count per threshold: the (step, task pair)s with per-layer cos < S.

    This is Recon's S-conflict score of each layer. A host-side reader (call it outside
    ``jax.jit``).

    Args:
      state: the :class:`ConflictMonitorState`, or an ``optax.chain`` state that contains it.
      observed_only: leave out the layers never observed (task-specific ones) once a step was
        monitored.
    """
    state = _find_state(state)
    observed = {k: int(v) for k, v in state.layer_observations.items()}
    keep = not observed_only or int(state.steps) == 0
    return {k: np.asarray(v) for k, v in state.layer_counts.items() if keep or observed[k] > 0}


def layer_conflict_summary(state: Any) -> dict[str, dict[str, Any]]:
    """Per observed layer: mean / std of the cosine, conflict fractions, mean magnitude similarity
    and sign disagreement over every monitored (step, task pair). Host-side, like
    :func:`layer_conflict_counts`. The whole shared vector is the entry ``"<all shared>"``.
    """
    state = _find_state(state)
    out: dict[str, dict[str, Any]] = {}

    def entry(n, counts, cos_sum, cos_sq_sum, gms_sum=None, sign_sum=None):
        n = int(n)
        d = max(n, 1)
        mean = float(cos_sum) / d
        row = {
            "observations": n,
            "conflict_counts": np.asarray(counts).tolist(),
            "conflict_fraction": (np.asarray(counts) / d).tolist(),
            "mean_cosine": mean,
            "std_cosine": float(np.sqrt(max(float(cos_sq_sum) / d - mean**2, 0.0))),
        }
        if gms_sum is not None:
            row["mean_magnitude_similarity"] = float(gms_sum) / d
            row["mean_sign_disagreement"] = float(sign_sum) / d
        return row

    for k, n in state.layer_observations.items():
        if int(n) > 0:
            out[k] = entry(
                n,
                state.layer_counts[k],
                state.layer_cosine_sum[k],
                state.layer_cosine_sq_sum[k],
                state.layer_magnitude_similarity_sum[k],
                state.layer_sign_disagreement_sum[k],
            )
    out["<all shared>"] = entry(
        state.observations, state.counts, state.cosine_sum, state.cosine_sq_sum
    )
    return out


def last_layer_gramians(state: Any) -> dict[str, jax.Array]:
    """Each layer's ``(T, T)`` Gramian of the last monitored step, for an ``observe`` hook.

    Use inside the jitted step, on the chain's new state, with a monitor built with
    ``num_tasks``::

      tx = optax.chain(mtlx.conflict_monitor(num_tasks=T), mtlx.pcgrad(), optax.adam(1e-3))
      observe = lambda ctx: mtlx.analysis.last_layer_gramians(ctx.new_opt_state)

    The trainer stacks them over steps: ``{layer: (steps, T, T)}``, the input of
    :func:`whole_vector_cosines` and :func:`mtlx.analysis.layer_scores_from_gramians`. Layers
    without shared leaves (task-specific, e.g. Recon's split layers) stay all zero.

    Raises:
      ValueError: no monitor in ``state``, or a monitor built without ``num_tasks``.
    """
    mon = _find_state(state)
    if not mon.layer_last_gramian:
        raise ValueError(
            "the conflict monitor keeps no Gramians: build it with conflict_monitor(num_tasks=T)."
        )
    return dict(mon.layer_last_gramian)


def whole_vector_cosines(
    gramians: Mapping[str, Any],
    *,
    layers: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
) -> np.ndarray:
    r"""Pairwise cosines of the task gradients over the concatenation of several layers.

    Recon's conflict measure (Shi et al., ICLR 2023, the distribution of :math:`\cos\phi_{ij}` of
    the task gradients w.r.t. *all* shared parameters, not per layer). The Gramian of a
    concatenated vector is the sum of the per-layer Gramians,
    :math:`G = \sum_{\ell \in L} J_\ell J_\ell^\top`, and
    :math:`\cos_{st} = G_{st} / \sqrt{G_{ss} G_{tt}}` (0 where a gradient is zero).

    Args:
      gramians: ``{layer: (..., T, T)}``, e.g. :func:`last_layer_gramians` stacked over steps.
      layers: the layers whose parameters form the vector (default: every key of ``gramians``).
      exclude: layers left out (e.g. Recon's split layers, to compare an unsplit model on the
        layers that a split model keeps shared).

    Returns:
      Host array ``(..., T (T - 1) / 2)`` of cosines, pairs in
      :func:`mtlx.analysis.pair_indices` order.

    Raises:
      ValueError: an unknown layer, or no layer left.
    """
    names = list(gramians) if layers is None else list(layers)
    unknown = [k for k in [*names, *exclude] if k not in gramians]
    if unknown:
        raise ValueError(f"layers {unknown} have no Gramian; the Gramians are {list(gramians)}.")
    keep = [k for k in names if k not in set(exclude)]
    if not keep:
        raise ValueError("no layer left to form the vector.")
    total = sum(np.asarray(gramians[k], np.float64) for k in keep)
    return np.asarray(conflict.statistics_from_gramian(jnp.asarray(total), (0.0,)).cosine)


def cosine_bin_fractions(
    cosines: Any, bins: Sequence[float] = RECON_COSINE_BINS
) -> dict[float, float]:
    """Share of the cosines in each of Recon's bins ``(edge, −1]``: ``{edge: mean(cos < edge)}``.

    Shi et al. (ICLR 2023) report the share of (step, task pair) whose cosine lies in
    (−0.01, −1], (−0.02, −1], (−0.05, −1] and (−0.1, −1] (:data:`RECON_COSINE_BINS`). The bins are
    nested, so the shares decrease. ``cos < edge`` and the paper's interval differ only at the
    edge itself, a float equality.

    Args:
      cosines: any array of cosines (e.g. :func:`whole_vector_cosines` of every step).
      bins: the upper edges, each in ``[-1, 1]``.

    Raises:
      ValueError: no cosine, a NaN, or an edge outside ``[-1, 1]``.
    """
    cos = np.asarray(cosines, np.float64).ravel()
    if cos.size == 0:
        raise ValueError("no cosines to bin.")
    if np.isnan(cos).any():
        raise ValueError("the cosines contain NaN.")
    edges = [float(b) for b in bins]
    if any(not -1.0 <= b <= 1.0 for b in edges):
        raise ValueError(f"bin edges are cosines in [-1, 1]; got {edges}.")
    return {b: float(np.mean(cos < b)) for b in edges}
