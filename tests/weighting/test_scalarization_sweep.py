"""mtlx.simplex_grid sizes; mtlx.scalarization_sweep: K vmapped models equal K sequential runs."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtlx


@pytest.mark.parametrize(
    "num_tasks, step, min_weight, size",
    [
        (2, 0.1, 0.1, 9),
        (3, 0.1, 0.1, 36),
        (2, 0.1, 0.0, 11),
        (3, 0.25, 0.0, 15),
        (1, 0.1, 0.1, 1),
        (4, 0.2, 0.2, 4),
    ],
)
def test_grid_size_and_simplex(num_tasks, step, min_weight, size):
    grid = np.asarray(mtlx.simplex_grid(num_tasks, step, min_weight))
    chex.assert_shape(grid, (size, num_tasks))
    np.testing.assert_allclose(grid.sum(axis=1), 1.0, rtol=1e-12)
    assert grid.min() >= min_weight - 1e-12
    steps = grid / step
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-9)  # on the grid
    assert len({tuple(np.round(row, 9)) for row in grid}) == size  # no duplicates
    if min_weight == 0:
        assert size == math.comb(round(1 / step) + num_tasks - 1, num_tasks - 1)


def test_grid_for_two_tasks_is_the_usual_list():
    np.testing.assert_allclose(
        mtlx.simplex_grid(2)[:, 0], [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1], rtol=1e-12
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_tasks=2, step=0.3), "whole number of steps"),
        (dict(num_tasks=2, step=0.1, min_weight=0.15), "whole number of steps"),
        (dict(num_tasks=3, step=0.1, min_weight=0.4), "empty"),
        (dict(num_tasks=0), "num_tasks"),
        (dict(num_tasks=2, step=0.0), "step"),
        (dict(num_tasks=2, min_weight=-0.1), "min_weight"),
        (dict(num_tasks=12, step=0.01, min_weight=0.0), "coarser"),
    ],
)
def test_bad_grids_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mtlx.simplex_grid(**kwargs)


# A two-task regression with shared encoder, as a user would write the one-model step.
RNG = np.random.default_rng(0)
X = jnp.asarray(RNG.standard_normal((32, 4)))
Y = jnp.asarray(np.stack([X[:, 0] - X[:, 1], X[:, 2] * X[:, 3]], axis=1))
ENGINE = mtlx.value_and_jacobian(
    lambda p, x, y: jnp.mean((jnp.tanh(x @ p["w"]) @ p["heads"].T - y) ** 2, axis=0),
    shared=lambda path, _: "heads" not in jax.tree_util.keystr(path),
)


def _init_params(key):
    k1, k2 = jax.random.split(key)
    return {"w": 0.5 * jax.random.normal(k1, (4, 8)), "heads": 0.5 * jax.random.normal(k2, (2, 8))}


def _optimizer(weights):
    return optax.chain(mtlx.scalarization(weights), optax.adam(1e-2))


def train_step(params, opt_state, weights, x, y):
    losses, jac = ENGINE(params, x, y)
    updates, opt_state = _optimizer(weights).update(jac, opt_state, params, task_losses=losses)
    return optax.apply_updates(params, updates), opt_state, losses


def test_sweep_equals_sequential_runs():
    weights = mtlx.simplex_grid(2)
    k, num_steps = weights.shape[0], 5
    # K copies of one initialisation, so that only the weights differ between the models
    params = _init_params(jax.random.key(0))
    params_k = jax.tree.map(lambda leaf: jnp.broadcast_to(leaf, (k, *leaf.shape)), params)
    opt_state_k = jax.vmap(_optimizer(weights[0]).init)(params_k)
    sweep = jax.jit(mtlx.scalarization_sweep(train_step))
    for _ in range(num_steps):
        params_k, opt_state_k, losses_k = sweep(params_k, opt_state_k, weights, X, Y)
    chex.assert_shape(losses_k, (k, 2))

    step = jax.jit(train_step)
    for i in range(k):
        params = _init_params(jax.random.key(0))
        opt_state = _optimizer(weights[i]).init(params)
        for _ in range(num_steps):
            params, opt_state, losses = step(params, opt_state, weights[i], X, Y)
        model_i = jax.tree.map(lambda leaf: leaf[i], params_k)
        chex.assert_trees_all_close(model_i, params, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(losses_k[i], losses, rtol=1e-9)
    # the weights matter: the K models have moved apart
    assert len({tuple(np.round(np.asarray(row), 12)) for row in losses_k}) == k


def test_sweep_rejects_mismatched_model_axes():
    sweep = mtlx.scalarization_sweep(train_step)
    params_k = {"w": jnp.zeros((3, 4, 8)), "heads": jnp.zeros((3, 2, 8))}  # 3 models, 9 weights
    opt_state_k = {"count": jnp.zeros(3)}
    with pytest.raises(ValueError, match="same leading axis"):
        sweep(params_k, opt_state_k, mtlx.simplex_grid(2), X, Y)
    with pytest.raises(ValueError, match="num_swept"):
        mtlx.scalarization_sweep(train_step, num_swept=0)
