"""mtlx.gradvac: Gramian-space GradVac against a row-space reference fed the same task orders."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtlx
from tests import strategies

J_BASE = jnp.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])


def _orders(key, num_tasks):
    """The task orders the update draws from ``key`` (the state's key before the split)."""
    _, key = jax.random.split(key)
    keys = jax.random.split(key, num_tasks)
    return [np.asarray(jax.random.permutation(k, num_tasks)) for k in keys]


def _reference_step(j, targets, orders, beta, eps=1e-8):
    """Algorithm 2 of Wang et al. (2021) on the rows, with TorchJD's eps placement."""
    targets = targets.copy()
    out = np.zeros(j.shape[1])
    for i, order in enumerate(orders):
        g = j[i].copy()
        for k in order:
            if k == i:
                continue
            norm_i, norm_k = np.linalg.norm(g), np.linalg.norm(j[k])
            phi = g @ j[k] / (norm_i * norm_k + eps)
            hat = targets[i, k]
            if phi < hat:
                num = norm_i * (hat * np.sqrt(1 - phi**2) - phi * np.sqrt(1 - hat**2))
                g = g + num / (norm_k * np.sqrt(1 - hat**2) + eps) * j[k]
            targets[i, k] = (1 - beta) * hat + beta * phi
        out += g
    return out, targets


_weights = jax.jit(mtlx.gradvac_weights)


@functools.cache
def _jitted(num_tasks, beta=0.5):
    tx = mtlx.gradvac(num_tasks, beta=beta)
    return tx, jax.jit(tx.update)


def test_known_values():
    tx, update = _jitted(2)
    out, state = update(J_BASE, tx.init(None))
    chex.assert_trees_all_close(out, jnp.array([0.5848, 3.8012, 3.8012]), atol=1e-4)
    weights, _ = _weights(J_BASE @ J_BASE.T, jnp.zeros((2, 2)), jax.random.key(0))
    chex.assert_trees_all_close(weights, jnp.array([2.2222, 1.5789]), atol=1e-4)


@pytest.mark.parametrize("num_tasks", [3, 6])
@pytest.mark.parametrize("beta", [0.5, 0.9])
def test_matches_row_space_reference_over_steps(num_tasks, beta):
    tx, update = _jitted(num_tasks, beta)
    state = tx.init(None)
    targets = np.zeros((num_tasks, num_tasks))
    for step in range(4):
        j = strategies.random_jacobian(np.random.default_rng(step), num_tasks, 7, norm_spread=2.0)
        expected, targets = _reference_step(j, targets, _orders(state.key, num_tasks), beta)
        out, state = update(jnp.asarray(j), state)
        np.testing.assert_allclose(out, expected, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(state.targets, targets, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_first_step_and_zero_beta_are_pcgrad(seed):
    j = jnp.asarray(strategies.random_jacobian(np.random.default_rng(seed), 5, 6))
    g = j @ j.T
    key = jax.random.key(seed)
    weights, _ = _weights(g, jnp.zeros((5, 5)), key, eps=0.0)
    chex.assert_trees_all_close(weights, jax.jit(mtlx.pcgrad_weights)(g, key), rtol=1e-9)
    _, targets = _weights(g, jnp.zeros((5, 5)), key, beta=0.0)
    chex.assert_trees_all_equal(targets, jnp.zeros((5, 5)))


def test_sum_when_cosines_meet_targets_and_homogeneous():
    j = jnp.abs(jnp.asarray(strategies.random_jacobian(np.random.default_rng(2), 5, 5)))
    weights, _ = _weights(j @ j.T, jnp.full((5, 5), -0.5), jax.random.key(0))
    chex.assert_trees_all_close(weights, jnp.ones(5))
    tx, update = _jitted(5)
    out, _ = update(j - 0.3, tx.init(None))
    chex.assert_trees_all_close(update(5.0 * (j - 0.3), tx.init(None))[0], 5.0 * out, rtol=1e-7)


def test_degenerate_rows_stay_finite_and_eps_zero():
    tx = mtlx.gradvac(3, eps=0.0)
    update = jax.jit(tx.update)
    for j in (jnp.zeros((3, 2)), jnp.ones((3, 2)), jnp.array([[1.0, 0], [-1.0, 0], [0, 0]])):
        out, state = update(j, tx.init(None))
        chex.assert_tree_all_finite((out, state.targets))


def test_layer_granularity_is_gradvac_on_each_layer():
    """The paper's per-layer GradVac: per-layer Gramians and targets, one order for all layers."""
    num_tasks, rng = 3, np.random.default_rng(7)
    params = {"enc": {"w": jnp.zeros((3, 2)), "b": jnp.zeros(2)}, "head": jnp.zeros(4)}
    tx = mtlx.gradvac(num_tasks, granularity="layer")
    update, state = jax.jit(tx.update), tx.init(params)
    assert state.targets.shape == (2, num_tasks, num_tasks)
    targets = [np.zeros((num_tasks, num_tasks))] * 2
    for _ in range(3):
        jac = jax.tree.map(lambda x: rng.standard_normal((num_tasks,) + x.shape), params)
        layers = [
            np.concatenate([jac["enc"]["b"], jac["enc"]["w"].reshape(num_tasks, -1)], axis=1),
            jac["head"],
        ]
        orders = _orders(state.key, num_tasks)
        expected = [_reference_step(rows, t, orders, 0.5) for rows, t in zip(layers, targets)]
        targets = [t for _, t in expected]
        out, state = update(jax.tree.map(jnp.asarray, jac), state)
        np.testing.assert_allclose(out["enc"]["b"], expected[0][0][:2], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(out["enc"]["w"].ravel(), expected[0][0][2:], rtol=1e-9)
        np.testing.assert_allclose(out["head"], expected[1][0], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(state.targets, np.stack(targets), rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="layers"):
        tx.update(jnp.ones((num_tasks, 2)), tx.init(params))
    with pytest.raises(ValueError, match="init"):
        tx.init(None)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_tasks=0), "num_tasks"),
        (dict(num_tasks=2, beta=1.5), "beta"),
        (dict(num_tasks=2, eps=-1.0), "eps"),
        (dict(num_tasks=2, granularity="all_matrix"), "granularity"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mtlx.gradvac(**kwargs)


def test_wrong_number_of_tasks_raises():
    tx = mtlx.gradvac(3)
    with pytest.raises(ValueError, match="num_tasks=3"):
        tx.update(J_BASE, tx.init(None))
