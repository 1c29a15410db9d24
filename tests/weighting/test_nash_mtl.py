"""mtlx.nash_mtl: the Nash bargaining solution G a = 1 / a, solved in Gramian space."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtlx
from tests import strategies

_weights = jax.jit(
    functools.partial(mtlx.nash_mtl_weights, max_norm=0.0), static_argnames=("max_iters",)
)


@pytest.mark.parametrize("num_tasks", [2, 5, 10, 40])
@pytest.mark.parametrize("spread", [0.0, 3.0])
def test_solves_the_bargaining_equation(num_tasks, spread):
    rng = np.random.default_rng(num_tasks)
    j = strategies.random_jacobian(rng, num_tasks, 60, norm_spread=spread)
    g = j @ j.T
    alpha = np.asarray(_weights(jnp.asarray(g)))
    assert np.all(alpha > 0)
    # Every task's weighted directional derivative is 1: non-conflicting, and the bargaining point.
    np.testing.assert_allclose(alpha * (g @ alpha), 1.0, atol=1e-6)


def test_orthogonal_rows_get_inverse_norms():
    norms = jnp.array([0.01, 1.0, 300.0])
    alpha = _weights(jnp.diag(norms**2))
    chex.assert_trees_all_close(alpha, 1.0 / norms, rtol=1e-7)


def test_scale_invariant_and_permutation_invariant():
    j = strategies.random_jacobian(np.random.default_rng(0), 5, 8, norm_spread=1.0)
    g = jnp.asarray(j @ j.T)
    alpha = _weights(g)
    chex.assert_trees_all_close(_weights(9.0 * g), alpha / 3.0, rtol=1e-7)
    perm = np.array([3, 0, 4, 1, 2])
    chex.assert_trees_all_close(_weights(g[perm][:, perm]), alpha[perm], rtol=1e-7)


def test_degenerate_gramians_give_finite_weights():
    for j in (np.zeros((3, 4)), np.ones((3, 4)), np.array([[1.0, 2], [-1.0, -2], [0, 0]])):
        alpha = _weights(jnp.asarray(j @ j.T))
        chex.assert_tree_all_finite(alpha)
        assert np.linalg.norm(alpha @ j) <= 1e-3 + np.linalg.norm(j)
    alpha = _weights(jnp.diag(jnp.array([1.0, 0.0])))
    chex.assert_trees_all_close(alpha, jnp.array([1.0, 0.0]), atol=1e-7)


def test_update_is_clipped_to_max_norm():
    j = jnp.asarray(strategies.random_jacobian(np.random.default_rng(1), 4, 6))
    tx = mtlx.nash_mtl(4, max_norm=0.5)
    out, state = jax.jit(tx.update)(j, tx.init(None))
    unclipped = state.weights @ j
    assert float(jnp.linalg.norm(unclipped)) > 0.5
    chex.assert_trees_all_close(jnp.linalg.norm(out), 0.5, rtol=1e-9)
    chex.assert_trees_all_close(out, unclipped * 0.5 / jnp.linalg.norm(unclipped), rtol=1e-9)
    tx = mtlx.nash_mtl(4, max_norm=0.0)
    chex.assert_trees_all_close(jax.jit(tx.update)(j, tx.init(None))[0], unclipped, rtol=1e-9)


def test_update_weights_every_reuses_the_last_weights():
    tx = mtlx.nash_mtl(3, max_norm=0.0, update_weights_every=2)
    update = jax.jit(tx.update)
    state = tx.init(None)
    js = [jnp.asarray(strategies.random_jacobian(np.random.default_rng(s), 3, 5)) for s in range(3)]
    weights = []
    for j in js:
        _, state = update(j, state)
        weights.append(state.weights)
    assert int(state.count) == 3
    chex.assert_trees_all_close(weights[1], weights[0])
    chex.assert_trees_all_close(weights[0], _weights(js[0] @ js[0].T))
    chex.assert_trees_all_close(weights[2], _weights(js[2] @ js[2].T))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_tasks=0), "num_tasks"),
        (dict(num_tasks=2, max_norm=-1.0), "max_norm"),
        (dict(num_tasks=2, update_weights_every=0), "update_weights_every"),
        (dict(num_tasks=2, max_iters=0), "max_iters"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mtlx.nash_mtl(**kwargs)


def test_wrong_number_of_tasks_raises():
    tx = mtlx.nash_mtl(3)
    with pytest.raises(ValueError, match="num_tasks=3"):
        tx.update(jnp.ones((2, 3)), tx.init(None))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_opposite_and_duplicate_rows_give_finite_weights_in_every_dtype(dtype):
    """The default reg_eps = 1e-8 vanishes in float32 (1 + 1e-8 == 1): the ridge is raised to
    16 eps there, so the cosine matrix of opposite rows stays non-singular."""
    with jax.enable_x64(dtype == jnp.float64):
        g = jnp.arange(1.0, 5.0, dtype=dtype)
        tx = mtlx.nash_mtl(num_tasks=2)
        update, state = tx.update(jnp.stack([g, -g]), tx.init(g), g)
        assert update.dtype == dtype
        assert np.all(np.isfinite(update)) and np.all(np.isfinite(state.weights))
        np.testing.assert_allclose(update, 0.0, atol=1e-6)  # equal weights on g and -g
        update, state = tx.update(jnp.stack([g, g]), tx.init(g), g)
        assert np.all(np.isfinite(update))
        np.testing.assert_allclose(update, g / jnp.linalg.norm(g), rtol=1e-4)  # clipped to 1
