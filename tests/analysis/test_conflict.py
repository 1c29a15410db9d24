"""mtlx.analysis.conflict: per-pair and per-layer statistics against a direct NumPy computation."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtlx
from mtlx import analysis
from mtlx.jacobian import StackedJacobian

THRESHOLDS = (0.0, -0.02, -0.05, -0.1)
T = 3


def _random_jacobian(seed, t=T):
    """Per-layer Jacobian leaves: two dense layers (kernel + bias), a root leaf, nested lists."""
    rng = np.random.default_rng(seed)
    return {
        "encoder": {
            "conv1": {
                "kernel": rng.standard_normal((t, 3, 3, 1, 2)),
                "bias": rng.standard_normal((t, 2)),
            },
            "dense": {
                "kernel": rng.standard_normal((t, 4, 5)),
                "bias": rng.standard_normal((t, 5)),
            },
        },
        "blocks": [{"scale": rng.standard_normal((t, 6))}],
        "root": rng.standard_normal((t, 7)),
    }


LAYERS = {
    "encoder/conv1": [("encoder", "conv1", "bias"), ("encoder", "conv1", "kernel")],
    "encoder/dense": [("encoder", "dense", "bias"), ("encoder", "dense", "kernel")],
    "blocks/0": [("blocks", 0, "scale")],
    "root": [("root",)],
}


def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


def _numpy_stats(rows):
    """Reference statistics of the (T, n) matrix `rows` for every pair s < t."""
    t = rows.shape[0]
    out = {k: [] for k in ("cos", "gms", "ratio", "sign", "conflicts")}
    for s in range(t):
        for u in range(s + 1, t):
            a, b = rows[s], rows[u]
            na, nb = np.linalg.norm(a), np.linalg.norm(b)
            cos = a @ b / (na * nb)
            out["cos"].append(cos)
            out["gms"].append(2 * na * nb / (na**2 + nb**2))
            out["ratio"].append(na / nb)
            out["sign"].append(np.mean(a * b < 0))
            out["conflicts"].append([cos < th for th in THRESHOLDS])
    return {k: np.asarray(v) for k, v in out.items()}


def _assert_matches(stats, ref):
    np.testing.assert_allclose(stats.cosine, ref["cos"], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(stats.magnitude_similarity, ref["gms"], rtol=1e-6)
    np.testing.assert_allclose(stats.norm_ratio, ref["ratio"], rtol=1e-6)
    np.testing.assert_allclose(stats.sign_disagreement, ref["sign"], rtol=1e-6)
    np.testing.assert_array_equal(stats.conflicts, ref["conflicts"])


@functools.cache
def _jitted_layer_statistics():
    return jax.jit(lambda j: analysis.layer_statistics(j, THRESHOLDS))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_layer_statistics_equal_numpy(seed):
    jac = _random_jacobian(seed)
    stats = _jitted_layer_statistics()(jax.tree.map(jnp.asarray, jac))
    assert list(stats) == ["blocks/0", "encoder/conv1", "encoder/dense", "root"]
    for layer, paths in LAYERS.items():
        rows = np.concatenate([_get(jac, p).reshape(T, -1) for p in paths], axis=1)
        _assert_matches(stats[layer], _numpy_stats(rows))


def test_whole_vector_statistics_equal_numpy():
    jac = _random_jacobian(3)
    rows = np.concatenate([x.reshape(T, -1) for x in jax.tree.leaves(jac)], axis=1)
    stats = jax.jit(analysis.pairwise_statistics, static_argnums=1)(jac, THRESHOLDS)
    _assert_matches(stats, _numpy_stats(rows))


def test_task_specific_leaves_are_excluded():
    jac = _random_jacobian(4)
    paths = [analysis.layer_of_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(jac)[0]]
    mask = [layer != "encoder/dense" for layer in paths]
    stacked = StackedJacobian(jax.tree.map(jnp.asarray, jac), mask)
    both = jax.jit(
        lambda j: (
            analysis.layer_statistics(j, THRESHOLDS),
            analysis.pairwise_statistics(j, THRESHOLDS),
        )
    )
    layers, whole = both(stacked)
    assert "encoder/dense" not in layers
    shared_rows = np.concatenate(
        [x.reshape(T, -1) for x, m in zip(jax.tree.leaves(jac), mask) if m], axis=1
    )
    _assert_matches(whole, _numpy_stats(shared_rows))


def test_engine_jacobian_equals_its_rows():
    params = {
        "l1": {"w": jnp.linspace(-1, 1, 6).reshape(3, 2), "b": jnp.array([0.1, -0.2])},
        "l2": {"w": jnp.array([0.5, -0.3])},
    }
    x = jnp.linspace(-2, 2, 15).reshape(5, 3)

    def loss_fn(p, x):
        h = jnp.tanh(x @ p["l1"]["w"] + p["l1"]["b"]) * p["l2"]["w"]
        return jnp.stack(
            [jnp.mean(h[:, 0] ** 2), jnp.mean((h[:, 1] - 1) ** 2), jnp.mean(h[:, 0] * h[:, 1])]
        )

    @jax.jit
    def both(params, x):
        _, jac = mtlx.value_and_jacobian(loss_fn)(params, x)
        rows = jax.jacrev(loss_fn)(params, x)
        return analysis.layer_statistics(jac), analysis.layer_statistics(rows)

    a, b = both(params, x)
    assert list(a) == ["l1", "l2"]
    chex.assert_trees_all_close(a, b, rtol=1e-6, atol=1e-9)


def test_degenerate_rows_give_finite_statistics():
    rng = np.random.default_rng(0)
    row = rng.standard_normal(4)
    zero = analysis.pairwise_statistics(np.zeros((3, 4)))
    for x in (zero.cosine, zero.magnitude_similarity, zero.norm_ratio, zero.sign_disagreement):
        chex.assert_tree_all_finite(x)
    np.testing.assert_allclose(zero.magnitude_similarity, 1.0)  # two zero gradients: equal sizes
    dup = analysis.pairwise_statistics(np.stack([row, row, -row]))
    np.testing.assert_allclose(dup.cosine, [1.0, -1.0, -1.0], atol=1e-12)
    np.testing.assert_allclose(dup.sign_disagreement, [0.0, 1.0, 1.0])
    one = analysis.pairwise_statistics(row[None])
    chex.assert_shape(one.cosine, (0,))
    chex.assert_shape(one.conflicts, (0, 4))


def test_statistics_from_stacked_gramians_and_thresholds():
    g = jnp.array([[[4.0, -2.0], [-2.0, 4.0]], [[1.0, 0.0], [0.0, 9.0]]])
    stats = analysis.statistics_from_gramian(g, (0.0, -0.6))
    np.testing.assert_allclose(stats.cosine, [[-0.5], [0.0]])
    np.testing.assert_array_equal(stats.conflicts, [[[True, False]], [[False, False]]])
    np.testing.assert_allclose(stats.magnitude_similarity, [[1.0], [0.6]])
    np.testing.assert_allclose(stats.norm_ratio, [[1.0], [1 / 3]])
    with pytest.raises(ValueError, match="thresholds"):
        analysis.statistics_from_gramian(g, (1.5,))
    with pytest.raises(ValueError, match="T, T"):
        analysis.statistics_from_gramian(jnp.ones((2, 3)))


def test_layer_names_follow_the_design():
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.conv1 = nnx.Conv(1, 2, (3, 3), rngs=rngs)
            self.norm = nnx.BatchNorm(2, rngs=rngs)
            self.blocks = nnx.List([nnx.Linear(2, 2, rngs=rngs)])

    _, params, _ = nnx.split(Net(nnx.Rngs(0)), nnx.Param, ...)
    assert analysis.layer_names(params) == ("blocks/0", "conv1", "norm")
    assert analysis.layer_sizes(params) == {"blocks/0": 6, "conv1": 20, "norm": 4}
    assert analysis.layer_names(jnp.ones(3)) == ("params",)
    assert analysis.layer_names({"a": jnp.ones(2), "b": (jnp.ones(1), jnp.ones(1))}) == ("a", "b")
    assert analysis.pair_labels(3, ["l", "r", "p"]) == ["l-r", "l-p", "r-p"]
