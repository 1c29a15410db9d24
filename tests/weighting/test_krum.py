"""mtlx.krum: Multi-Krum selection from the Gramian against a row-space reference."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtlx
from tests import strategies

J_KRUM = np.array(
    [[1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [75.0, -666.0, 23], [1.0, 2.0, 3.0], [2.0, 0.0, 1.0]]
)


def _reference_weights(j, n_byzantine, n_selected):
    """Multi-Krum from the rows: Blanchard et al.'s scores with explicit distances."""
    t = j.shape[0]
    dist = np.linalg.norm(j[:, None] - j[None], axis=-1)
    scores = [np.sort(np.delete(dist[i], i))[: t - n_byzantine - 2].sum() for i in range(t)]
    w = np.zeros(t)
    w[np.argsort(scores, kind="stable")[:n_selected]] = 1.0 / n_selected
    return w


@functools.cache
def _jitted(n_byzantine, n_selected):
    tx = mtlx.krum(n_byzantine, n_selected)
    return tx, jax.jit(tx.update)


def test_known_values():
    g = jnp.asarray(J_KRUM @ J_KRUM.T)
    chex.assert_trees_all_close(mtlx.krum_weights(g, 1, 4), jnp.array([0.25, 0.25, 0, 0.25, 0.25]))
    tx, update = _jitted(1, 4)
    out, _ = update(jnp.asarray(J_KRUM), tx.init(None))
    chex.assert_trees_all_close(out, jnp.array([1.25, 0.75, 1.5]), atol=1e-12)


@pytest.mark.parametrize("num_tasks, n_byzantine, n_selected", [(5, 1, 1), (7, 2, 3), (10, 0, 4)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_row_space_multi_krum(num_tasks, n_byzantine, n_selected, seed):
    j = strategies.random_jacobian(np.random.default_rng(seed), num_tasks, 6, norm_spread=1.0)
    weights = jax.jit(mtlx.krum_weights, static_argnums=(1, 2))(
        jnp.asarray(j @ j.T), n_byzantine, n_selected
    )
    np.testing.assert_allclose(weights, _reference_weights(j, n_byzantine, n_selected), atol=1e-12)


def test_outliers_are_never_selected():
    rng = np.random.default_rng(0)
    j = 1.0 + 0.1 * rng.standard_normal((8, 5))
    j[[2, 6]] = 1e3 * rng.standard_normal((2, 5))  # two Byzantine rows
    weights = mtlx.krum_weights(jnp.asarray(j @ j.T), 2, 3)
    assert weights[2] == 0 and weights[6] == 0
    chex.assert_trees_all_close(weights.sum(), 1.0)


def test_pytree_and_task_specific_leaves():
    rng = np.random.default_rng(3)
    j = rng.standard_normal((5, 8))
    tx, update = _jitted(1, 2)
    flat, _ = update(jnp.asarray(j), tx.init(None))
    tree, _ = update(jax.tree.map(jnp.asarray, strategies.as_pytree(j)), tx.init(None))
    np.testing.assert_allclose(strategies.flatten_pytree(tree), flat, atol=1e-12)
    heads = rng.standard_normal((5, 5, 2))
    jac = mtlx.as_jacobian({"shared": jnp.asarray(j), "heads": jnp.asarray(heads)})
    jac = type(jac)({"shared": jnp.asarray(j), "heads": jnp.asarray(heads)}, (False, True))
    out, _ = tx.update(jac, tx.init(None))
    chex.assert_trees_all_close(out["heads"], jnp.asarray(heads.sum(0)))


@pytest.mark.parametrize(
    "args, num_tasks, match",
    [
        ((-1,), 5, "n_byzantine"),
        ((0, 0), 5, "n_selected"),
        ((1,), 3, "needs at least"),
        ((0, 4), 3, "needs at least"),
    ],
)
def test_bad_arguments_raise(args, num_tasks, match):
    with pytest.raises(ValueError, match=match):
        tx = mtlx.krum(*args)
        tx.update(jnp.ones((num_tasks, 2)), tx.init(None))


def test_scan_and_scale():
    tx, _ = _jitted(1, 2)
    j = jnp.asarray(strategies.random_jacobian(np.random.default_rng(5), 6, 4))

    def step(state, c):
        out, state = tx.update(c * j, state)
        return state, out

    _, outs = jax.lax.scan(step, tx.init(None), jnp.array([1.0, 3.0]))
    chex.assert_trees_all_close(outs[1], 3.0 * outs[0], rtol=1e-10)
