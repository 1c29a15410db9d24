"""Recon's controls and its whole-shared-vector measure (Shi et al., ICLR 2023).

Random layers (RSL), random parameters (RSP), first-K / last-K, the forward layer order, the
per-step Gramians kept by the conflict monitor, whole-vector cosines and the paper's bins, the
S-conflict score from recorded Gramians, and the Jaccard overlap of selections.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtlx
from mtlx import analysis

T = 3


def _params(seed=0):
    rng = np.random.default_rng(seed)
    shapes = {"l1": (4, 8), "l2": (8, 8), "l3": (8, T)}
    return {
        k: {
            "kernel": jnp.asarray(0.5 * rng.standard_normal(s), jnp.float32),
            "bias": jnp.asarray(0.1 * rng.standard_normal(s[1]), jnp.float32),
        }
        for k, s in shapes.items()
    }


def apply(params, x):
    """A 3-layer MLP in tree order l1 -> l2 -> l3, returning T per-task outputs."""
    h = jnp.tanh(x @ params["l1"]["kernel"] + params["l1"]["bias"])
    h = jnp.tanh(h @ params["l2"]["kernel"] + params["l2"]["bias"])
    out = h @ params["l3"]["kernel"] + params["l3"]["bias"]
    return tuple(out[:, t] for t in range(T))


def apply_swapped(params, x):
    """Reads l2 first: its kernel is (8, 8), so the input goes through a fixed (4, 8) map."""
    h = jnp.tanh(jnp.tile(x, 2) @ params["l2"]["kernel"] + params["l2"]["bias"])
    h = jnp.tanh(h[:, :4] @ params["l1"]["kernel"] + params["l1"]["bias"])
    out = h @ params["l3"]["kernel"] + params["l3"]["bias"]
    return tuple(out[:, t] for t in range(T))


# --- selections -------------------------------------------------------------------------------


def test_random_layers_draws_k_distinct_candidates_in_order_and_depends_on_key():
    candidates = [f"c{i}" for i in range(12)]
    draws = [analysis.random_layers(candidates, 4, key=k) for k in range(20)]
    for d in draws:
        assert len(d) == 4 and len(set(d)) == 4
        assert d == [c for c in candidates if c in d]  # the candidates' order
    assert len({tuple(d) for d in draws}) > 10  # not a fixed choice
    assert analysis.random_layers(candidates, 4, key=3) == analysis.random_layers(
        candidates, 4, key=jax.random.key(3)
    )
    # Every candidate is drawn eventually (uniform without replacement).
    seen = {c for k in range(200) for c in analysis.random_layers(candidates, 2, key=k)}
    assert seen == set(candidates)


def test_first_and_last_layers():
    order = ["a", "b", "c", "d"]
    assert analysis.first_layers(order, 2) == ["a", "b"]
    assert analysis.last_layers(order, 2) == ["c", "d"]
    assert analysis.first_layers(order, 0) == [] and analysis.last_layers(order, 0) == []
    assert analysis.last_layers(order, 4) == order


@pytest.mark.parametrize(
    "fn",
    [
        lambda c, k: analysis.first_layers(c, k),
        lambda c, k: analysis.last_layers(c, k),
        lambda c, k: analysis.random_layers(c, k, key=0),
    ],
)
def test_selection_errors(fn):
    with pytest.raises(ValueError, match="larger than the 3 candidate"):
        fn(["a", "b", "c"], 4)
    with pytest.raises(ValueError, match="non-negative"):
        fn(["a", "b", "c"], -1)
    with pytest.raises(ValueError, match="repeat"):
        fn(["a", "a", "c"], 1)


def test_layer_order_follows_the_forward_pass_not_the_tree():
    params = _params()
    x = jnp.ones((5, 4))
    assert analysis.layer_order(apply, params, x) == ["l1", "l2", "l3"]
    assert analysis.layer_order(apply_swapped, params, x) == ["l2", "l1", "l3"]
    assert list(analysis.layer_names(params)) == ["l1", "l2", "l3"]


def test_layer_order_on_the_narrow_resnet_starts_at_the_stem():
    from flax import nnx

    from mtlx import models

    model = models.narrow_resnet_hps(num_tasks=2, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    order = analysis.layer_order(
        lambda p, x: nnx.merge(graphdef, p, rest)(x), nnx.as_pure(params), jnp.ones((2, 8, 16, 1))
    )
    assert order[:3] == ["encoder/stem", "encoder/stem_norm", "encoder/blocks/0/conv1"]
    assert order[-2:] == ["encoder/fc", "heads/head"]
    i = order.index
    assert i("encoder/blocks/1/conv1") < i("encoder/blocks/1/proj") < i("encoder/blocks/2/conv1")


def test_jaccard():
    assert analysis.jaccard(["a", "b"], ["b", "a"]) == 1.0
    assert analysis.jaccard(["a", "b"], ["b", "c"]) == pytest.approx(1 / 3)
    assert analysis.jaccard(["a"], ["b"]) == 0.0
    assert analysis.jaccard([], []) == 1.0


# --- RSP: random single parameters ------------------------------------------------------------


def test_random_parameter_mask_counts_and_layers():
    params = _params()
    mask = analysis.random_parameter_mask(params, 10, key=0)
    assert sum(int(np.sum(m)) for m in jax.tree.leaves(mask)) == 10
    only = analysis.random_parameter_mask(params, 7, key=1, layers=["l2"])
    assert int(np.sum(only["l2"]["kernel"]) + np.sum(only["l2"]["bias"])) == 7
    assert not np.any(only["l1"]["kernel"]) and not np.any(only["l3"]["bias"])
    assert jax.tree.structure(mask) == jax.tree.structure(params)
    full = analysis.random_parameter_mask(params, 72, key=0, layers=["l2"])  # 64 + 8 entries
    assert np.all(full["l2"]["kernel"]) and np.all(full["l2"]["bias"])


def test_random_parameter_mask_errors():
    params = _params()
    with pytest.raises(ValueError, match=r"count must be an int in \[0, 72\]"):
        analysis.random_parameter_mask(params, 73, key=0, layers=["l2"])
    with pytest.raises(ValueError, match="count"):
        analysis.random_parameter_mask(params, -1, key=0)
    with pytest.raises(ValueError, match="not in the parameters"):
        analysis.random_parameter_mask(params, 1, key=0, layers=["nope"])


def test_split_entries_copies_start_equal_and_task_t_reads_copy_t():
    params = _params()
    x = jnp.asarray(np.random.default_rng(1).standard_normal((6, 4)), jnp.float32)
    mask = analysis.random_parameter_mask(params, 12, key=2)
    split, fn, task_fn = analysis.split_entries(apply, params, mask, T)
    # Initialised from the shared values: the split model computes the original outputs.
    for a, b in zip(fn(split, x), apply(params, x)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    entries = split[analysis.ENTRIES_KEY]
    assert sum(v.shape[1] for v in entries.values()) == 12
    assert all(v.shape[0] == T for v in entries.values())
    # Task t's output depends on copy t of the entries only.
    grads = jax.grad(lambda p: fn(p, x)[1].sum())(split)
    for v in grads[analysis.ENTRIES_KEY].values():
        assert not np.any(v[0]) and not np.any(v[2])
    assert any(np.any(v[1]) for v in grads[analysis.ENTRIES_KEY].values())
    # The replaced shared entries are dead: no gradient reaches them.
    for g, m in zip(jax.tree.leaves({k: grads[k] for k in params}), jax.tree.leaves(mask)):
        assert not np.any(np.asarray(g)[np.asarray(m)])
    # Changing copy 0 changes task 0's output only.
    bumped = jax.tree.map(lambda v: v.at[0].add(1.0), split[analysis.ENTRIES_KEY])
    out = fn({**split, analysis.ENTRIES_KEY: bumped}, x)
    base = fn(split, x)
    assert not np.allclose(out[0], base[0])
    np.testing.assert_allclose(out[1], base[1])
    np.testing.assert_allclose(out[2], base[2])


def test_split_entries_task_fn_is_each_output_alone():
    params = _params()
    x = jnp.asarray(np.random.default_rng(2).standard_normal((6, 4)), jnp.float32)
    split, fn, task_fn = analysis.split_entries(
        apply, params, analysis.random_parameter_mask(params, 9, key=4), T
    )
    split = {
        **split,
        analysis.ENTRIES_KEY: jax.tree.map(
            lambda v: v + jnp.arange(T, dtype=v.dtype)[:, None], split[analysis.ENTRIES_KEY]
        ),
    }  # copies differ, so reading the wrong one shows
    for t, out in enumerate(fn(split, x)):
        np.testing.assert_allclose(task_fn(split, t, x), out, rtol=1e-6, atol=1e-6)


def test_split_entries_errors():
    params = _params()
    mask = jax.tree.map(lambda x: np.zeros(np.shape(x), bool), params)
    with pytest.raises(ValueError, match="num_tasks"):
        analysis.split_entries(apply, params, mask, 0)
    with pytest.raises(ValueError, match="without the key"):
        analysis.split_entries(apply, {**params, analysis.ENTRIES_KEY: {}}, mask, T)
    bad = {**mask, "l1": {"kernel": np.zeros((2, 2), bool), "bias": mask["l1"]["bias"]}}
    with pytest.raises(ValueError, match="shape"):
        analysis.split_entries(apply, params, bad, T)


# --- the whole-shared-vector measure ----------------------------------------------------------


def _rows(seed=0):
    """Per-layer task-stacked gradients (T, n_layer) and their per-layer Gramians."""
    rng = np.random.default_rng(seed)
    rows = {k: rng.standard_normal((T, n)) for k, n in (("a", 5), ("b", 7), ("c", 3))}
    return rows, {k: r @ r.T for k, r in rows.items()}


def _cos(rows):
    g = np.concatenate(rows, axis=1)
    r, c = analysis.pair_indices(T)
    n = np.linalg.norm(g, axis=1)
    return (g @ g.T)[r, c] / (n[r] * n[c])


def test_whole_vector_cosines_equal_the_cosines_of_the_concatenated_gradients():
    rows, grams = _rows()
    np.testing.assert_allclose(
        analysis.whole_vector_cosines(grams), _cos(list(rows.values())), rtol=1e-5
    )
    np.testing.assert_allclose(
        analysis.whole_vector_cosines(grams, exclude=["b"]), _cos([rows["a"], rows["c"]]), rtol=1e-5
    )
    np.testing.assert_allclose(
        analysis.whole_vector_cosines(grams, layers=["b"]), _cos([rows["b"]]), rtol=1e-5
    )
    # A stack of steps: (steps, T, T) per layer -> (steps, pairs).
    stacked = {k: np.stack([g, 2 * g]) for k, g in grams.items()}
    assert analysis.whole_vector_cosines(stacked).shape == (2, 3)


def test_whole_vector_cosines_errors_and_zero_gradients():
    _, grams = _rows()
    with pytest.raises(ValueError, match="no Gramian"):
        analysis.whole_vector_cosines(grams, exclude=["z"])
    with pytest.raises(ValueError, match="no layer left"):
        analysis.whole_vector_cosines(grams, layers=["a"], exclude=["a"])
    zero = {"a": np.zeros((T, T))}
    assert np.all(np.isfinite(analysis.whole_vector_cosines(zero)))


def test_cosine_bin_fractions():
    cos = np.array([-0.5, -0.06, -0.03, -0.015, -0.005, 0.2, 0.9, -0.2])
    frac = analysis.cosine_bin_fractions(cos)
    assert list(frac) == list(analysis.RECON_COSINE_BINS)
    assert frac[-0.01] == 5 / 8 and frac[-0.02] == 4 / 8
    assert frac[-0.05] == 3 / 8 and frac[-0.1] == 2 / 8
    with pytest.raises(ValueError, match="no cosines"):
        analysis.cosine_bin_fractions([])
    with pytest.raises(ValueError, match="NaN"):
        analysis.cosine_bin_fractions([0.1, np.nan])
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        analysis.cosine_bin_fractions([0.1], bins=(-2.0,))


def test_monitor_keeps_per_layer_gramians_of_the_last_step():
    params = _params()
    rng = np.random.default_rng(3)
    jac = jax.tree.map(
        lambda x: jnp.asarray(rng.standard_normal((T, *x.shape)), jnp.float32), params
    )
    tx = analysis.conflict_monitor(num_tasks=T)
    state = tx.init(params)
    _, state = jax.jit(tx.update)(jac, state)
    grams = analysis.last_layer_gramians(state)
    for layer in ("l1", "l2", "l3"):
        rows = np.concatenate(
            [np.asarray(jac[layer][k]).reshape(T, -1) for k in ("bias", "kernel")], axis=1
        )
        np.testing.assert_allclose(grams[layer], rows @ rows.T, rtol=1e-4, atol=1e-4)
    # The whole vector from the kept Gramians is the monitor's own whole-vector statistic.
    cos = analysis.whole_vector_cosines(grams)
    summary = analysis.layer_conflict_summary(state)["<all shared>"]
    assert summary["mean_cosine"] == pytest.approx(float(np.mean(cos)), abs=1e-5)
    # In a chain and inside an observe-like jitted function.
    chain = optax.chain(analysis.conflict_monitor(num_tasks=T), mtlx.ew(), optax.sgd(0.1))
    s = chain.init(params)
    _, s = chain.update(jac, s, params)
    got = jax.jit(analysis.last_layer_gramians)(s)
    np.testing.assert_allclose(got["l2"], grams["l2"], rtol=1e-5)


def test_monitor_without_num_tasks_keeps_no_gramians_and_says_so():
    params = _params()
    state = analysis.conflict_monitor().init(params)
    assert state.layer_last_gramian == {}
    with pytest.raises(ValueError, match="num_tasks=T"):
        analysis.last_layer_gramians(state)
    with pytest.raises(ValueError, match="num_tasks"):
        analysis.conflict_monitor(num_tasks=0)
    jac = jax.tree.map(lambda x: jnp.ones((2, *x.shape)), params)
    tx = analysis.conflict_monitor(num_tasks=T)
    with pytest.raises(ValueError, match="got a Jacobian of 2 tasks"):
        tx.update(jac, tx.init(params))


def test_layer_scores_from_gramians_match_the_monitor_counts():
    params = _params()
    rng = np.random.default_rng(4)
    tx = analysis.conflict_monitor((0.0, -0.05), num_tasks=T)
    state = tx.init(params)
    update = jax.jit(tx.update)
    recorded = []
    for _ in range(6):
        jac = jax.tree.map(
            lambda x: jnp.asarray(rng.standard_normal((T, *x.shape)), jnp.float32), params
        )
        _, state = update(jac, state)
        recorded.append(analysis.last_layer_gramians(state))
    stacked = {k: np.stack([r[k] for r in recorded]) for k in recorded[0]}
    for s in (0.0, -0.05):
        assert analysis.layer_scores_from_gramians(stacked, s) == analysis.recon_scores(
            state, threshold=s
        )
    short = analysis.layer_scores_from_gramians(stacked, 0.0, steps=2)
    assert sum(short.values()) <= sum(analysis.layer_scores_from_gramians(stacked).values())
    assert sum(short.values()) <= 2 * 3 * 3  # 2 steps x 3 pairs x 3 layers
    with pytest.raises(ValueError, match="steps"):
        analysis.layer_scores_from_gramians(stacked, steps=7)
    with pytest.raises(ValueError, match=r"\(steps, T, T\)"):
        analysis.layer_scores_from_gramians({"a": np.zeros((T, T))})
