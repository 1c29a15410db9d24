"""mtlx.analysis.recon: layer selection, split parameters and the vmapped split forward."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtlx
from mtlx import analysis

T = 3
LAYERS = ("l1", "l2", "l3")


def _params(seed=0):
    rng = np.random.default_rng(seed)
    shapes = {"l1": (4, 8), "l2": (8, 8), "l3": (8, T)}
    return {
        k: {
            "kernel": jnp.asarray(0.5 * rng.standard_normal(s)),
            "bias": jnp.asarray(0.1 * rng.standard_normal(s[1])),
        }
        for k, s in shapes.items()
    }


def apply(params, x):
    """A 3-layer MLP returning a tuple of T per-task outputs (column t of the last layer)."""
    h = x
    for k in LAYERS:
        h = h @ params[k]["kernel"] + params[k]["bias"]
        h = jnp.tanh(h) if k != "l3" else h
    return tuple(h[:, t] for t in range(T))


X = jnp.asarray(np.random.default_rng(9).standard_normal((5, 4)))


def test_all_shared_is_exactly_the_original_model():
    params = _params()
    split, axes = analysis.split_params(params, [], T)
    out = jax.jit(analysis.split_apply(apply, axes, T))(split, X)
    ref = jax.jit(apply)(params, X)
    for a, b in zip(out, ref):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("layers", [("l2",), ("l1", "l3"), LAYERS])
def test_copies_reproduce_the_original_and_task_t_uses_only_copy_t(layers):
    params = _params()
    split, axes = analysis.split_params(params, layers, T)
    fn = analysis.split_apply(apply, axes, T)
    for a, b in zip(fn(split, X), apply(params, X)):  # copies initialised from the shared layer
        np.testing.assert_allclose(a, b, rtol=1e-12)
    for t in range(T):
        grads = jax.grad(lambda p: jnp.sum(fn(p, X)[t] ** 2))(split)
        for layer in layers:
            g = [np.abs(grads[layer][k]).reshape(T, -1) for k in ("kernel", "bias")]
            norms = np.concatenate(g, 1).sum(1)
            assert norms[t] > 0
            np.testing.assert_array_equal(np.delete(norms, t), 0.0)


@pytest.mark.parametrize("layers", [(), ("l2",), ("l1", "l3")])
def test_split_task_apply_is_output_t_of_split_apply(layers):
    params = _params()
    split, axes = analysis.split_params(params, layers, T)
    split = jax.tree.map(  # copies that differ, so that reading the wrong one shows
        lambda x, a: (
            x if a is None else x * (1.0 + jnp.arange(T).reshape((T,) + (1,) * (x.ndim - 1)))
        ),
        split,
        axes,
        is_leaf=lambda a: a is None,
    )
    out = analysis.split_apply(apply, axes, T)(split, X)
    task_fn = analysis.split_task_apply(apply, axes, T)
    for t in range(T):
        np.testing.assert_allclose(task_fn(split, t, X), out[t], rtol=1e-12)
    with pytest.raises(ValueError, match="out of range"):
        task_fn(split, T, X)


def test_per_task_engine_on_a_split_model_equals_the_batched_engine():
    params = _params()
    split, axes = analysis.split_params(params, ["l2"], T)
    split = jax.tree.map(
        lambda x, a: (
            x if a is None else x + 0.1 * jnp.arange(T).reshape((T,) + (1,) * (x.ndim - 1))
        ),
        split,
        axes,
        is_leaf=lambda a: a is None,
    )
    y = jnp.asarray(np.random.default_rng(3).standard_normal((5, T)))
    shared = analysis.shared_mask(axes)
    fn = analysis.split_apply(apply, axes, T)
    task_fn = analysis.split_task_apply(apply, axes, T)
    batched = mtlx.value_and_jacobian(
        lambda p: jnp.stack([jnp.mean((o - y[:, t]) ** 2) for t, o in enumerate(fn(p, X))]),
        shared=shared,
    )
    per_task = mtlx.value_and_jacobian_per_task(
        lambda p, t: jnp.mean((task_fn(p, t, X) - y[:, t]) ** 2), T, shared=shared
    )
    (l1, j1), (l2, j2) = jax.jit(batched)(split), jax.jit(per_task)(split)
    np.testing.assert_allclose(l2, l1, rtol=1e-12)
    np.testing.assert_allclose(j2.gramian(), j1.gramian(), rtol=1e-10)
    w = jnp.asarray([0.3, 1.0, 2.0])
    for a, b in zip(jax.tree.leaves(j2.combine(w)), jax.tree.leaves(j1.combine(w))):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)


def _dot_shapes(fn, *args):
    jaxpr = jax.make_jaxpr(fn)(*args)
    return [tuple(e.outvars[0].aval.shape) for e in jaxpr.eqns if e.primitive.name == "dot_general"]


def test_the_shared_prefix_is_computed_once():
    params = _params()
    split, axes = analysis.split_params(params, ["l2"], T)
    shapes = _dot_shapes(analysis.split_apply(apply, axes, T), split, X)
    # l1 (before the first split layer) is unbatched; l2 and l3 carry the task axis.
    assert shapes[0] == (5, 8)
    assert all(T in s and len(s) == 3 for s in shapes[1:]), shapes
    split_all, axes_all = analysis.split_params(params, LAYERS, T)
    assert len(_dot_shapes(analysis.split_apply(apply, axes_all, T), split_all, X)[0]) == 3

    # The cost analysis agrees: splitting l2 saves the (T - 1) extra l1 products.
    def flops(p, a):
        cost = jax.jit(analysis.split_apply(apply, a, T)).lower(p, X).compile().cost_analysis()
        return (cost[0] if isinstance(cost, list) else cost)["flops"]

    assert flops(split, axes) < flops(split_all, axes_all)


def test_split_leaves_are_task_specific_for_the_engine():
    import mtlx

    params = _params()
    split, axes = analysis.split_params(params, ["l2"], T)
    fn = analysis.split_apply(apply, axes, T)

    def loss_fn(p, x):
        return jnp.stack([jnp.mean(o**2) for o in fn(p, x)])

    @jax.jit
    def rows_and_layers(split):
        _, jac = mtlx.value_and_jacobian(loss_fn, shared=analysis.shared_mask(axes))(split, X)
        return jac.rows(), analysis.layer_statistics(jac)

    rows, layers = rows_and_layers(split)
    # Task t's row on the split layer is non-zero only on copy t.
    k = np.abs(np.asarray(rows["l2"]["kernel"])).sum(axis=(2, 3))
    np.testing.assert_array_equal(k * (1 - np.eye(T)), 0.0)
    assert list(layers) == ["l1", "l3"]


def test_fresh_init_and_parameter_increase():
    params = _params()

    def fresh_init(key):
        return _params(int(jax.random.randint(key, (), 0, 1000)))

    split, _ = analysis.split_params(params, ["l1"], T, init="fresh", fresh_init=fresh_init, key=1)
    assert split["l1"]["kernel"].shape == (T, 4, 8)
    assert not np.allclose(split["l1"]["kernel"][0], split["l1"]["kernel"][1])
    np.testing.assert_array_equal(split["l2"]["kernel"], params["l2"]["kernel"])
    inc = analysis.parameter_increase(params, ["l1", "l3"], T)
    original = 4 * 8 + 8 + 8 * 8 + 8 + 8 * T + T
    assert inc.original == original
    assert inc.added == (T - 1) * (40 + 8 * T + T)
    split, _ = analysis.split_params(params, ["l1", "l3"], T)
    assert inc.split == sum(x.size for x in jax.tree.leaves(split))
    np.testing.assert_allclose(inc.fraction, inc.added / original)
    with pytest.raises(ValueError, match="not in the parameters"):
        analysis.split_params(params, ["l9"], T)
    with pytest.raises(ValueError, match="fresh_init"):
        analysis.split_params(params, ["l1"], T, init="fresh")


def test_select_layers_and_scores_from_a_monitor():
    scores = {"a": 5, "b": 9, "c": 1, "d": 9}
    assert analysis.select_layers(scores, top_k=2) == ["b", "d"]
    sizes = {"a": 10, "b": 100, "c": 5, "d": 20}
    # T = 3 adds twice a layer's size: b (200) is skipped, d (40) and a (20) fit, c (10) would
    # exceed 65.
    budget = functools.partial(analysis.select_layers, scores, sizes=sizes, num_tasks=3)
    assert budget(param_budget=65) == ["d", "a"]
    assert budget(param_budget=70) == ["d", "a", "c"]
    with pytest.raises(ValueError, match="exactly one"):
        analysis.select_layers(scores)

    tx = analysis.conflict_monitor((0.0, -0.5))
    params = {"x": {"w": jnp.zeros(2)}, "y": {"w": jnp.zeros(2)}}
    jac = {
        "x": {"w": jnp.array([[1.0, 0.0], [-1.0, 0.1]])},
        "y": {"w": jnp.array([[1.0, 0.0], [1.0, -0.1]])},
    }
    state = tx.init(params)
    for _ in range(3):
        _, state = tx.update(jac, state)
    assert analysis.recon_scores(state) == {"x": 3, "y": 0}
    assert analysis.recon_scores(state, threshold=-0.5) == {"x": 3, "y": 0}
    with pytest.raises(ValueError, match="not monitored"):
        analysis.recon_scores(state, threshold=-0.3)
    assert analysis.conflict_fraction(state) == 0.5
    assert analysis.conflict_fraction(state, exclude=["x"]) == 0.0
