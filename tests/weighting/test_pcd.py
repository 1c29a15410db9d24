"""mtlx.pcd: priority-constrained descent, its QP's KKT conditions and its special cases."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtlx
from mtlx.weighting import _pcd
from tests import strategies


@functools.cache
def _jitted(num_tasks, tau=0.02):
    tx = mtlx.pcd(num_tasks, tau=tau)
    return tx, jax.jit(tx.update)


def _apply(j, tau=0.02):
    tx, update = _jitted(j.shape[0], tau)
    return update(jnp.asarray(j), tx.init(None))


@pytest.mark.parametrize("num_tasks", [3, 10])
@pytest.mark.parametrize("tau", [0.02, 0.5])
@pytest.mark.parametrize("seed", [0, 1])
def test_qp_solution_satisfies_kkt(num_tasks, tau, seed):
    j = strategies.random_jacobian(np.random.default_rng(seed), num_tasks, 12)
    j[1:] -= 0.8 * j[0]  # secondaries conflicting with the primary make constraints active
    g = j @ j.T
    solve = jax.jit(_pcd._solve_pcd_qp, static_argnums=2)
    w = np.asarray(solve(jnp.asarray(g), jnp.full(num_tasks - 1, tau), 64))
    mu, d = w[1:], w @ j
    slacks = j[1:] @ d - tau * np.diag(g)[1:]
    scale = np.diag(g).max()
    assert w[0] == 1 and np.all(mu >= 0)
    assert np.all(slacks >= -1e-6 * scale)  # primal feasibility
    np.testing.assert_allclose(mu * slacks, 0.0, atol=1e-6 * scale)  # complementary slackness
    assert np.any(mu > 0)


def test_special_cases():
    g1 = np.array([1.0, 2.0, 0.0])
    easy = np.stack([g1, [1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])  # constraints hold at g1
    chex.assert_trees_all_close(_apply(easy)[0], jnp.asarray(g1), rtol=1e-6)
    infeasible = np.stack([g1, [0.0, 0.0, 1.0], [0.0, 0.0, -1.0]])  # anti-parallel secondaries
    chex.assert_trees_all_close(_apply(infeasible)[0], jnp.asarray(g1), rtol=1e-9)
    zero_primary = np.stack([np.zeros(3), [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    chex.assert_trees_all_equal(_apply(zero_primary)[0], jnp.zeros(3))
    chex.assert_trees_all_close(_apply(g1[None])[0], jnp.asarray(g1), rtol=1e-9)


def test_update_has_the_primary_norm_and_helps_secondaries():
    j = strategies.random_jacobian(np.random.default_rng(3), 4, 6, norm_spread=2.0)
    j[1:] -= 2.0 * j[0] * np.linalg.norm(j[1:], axis=1, keepdims=True) / np.linalg.norm(j[0])
    out = np.asarray(_apply(j, 0.3)[0])
    np.testing.assert_allclose(np.linalg.norm(out), np.linalg.norm(j[0]), rtol=1e-9)
    cosines = j[1:] @ out / np.linalg.norm(j[1:], axis=1) / np.linalg.norm(out)
    assert np.all(cosines > 0), cosines


def test_moving_average_and_homogeneity():
    tx, update = _jitted(3)
    state = tx.init(None)
    js = [strategies.random_jacobian(np.random.default_rng(s), 3, 5) for s in range(3)]
    ema = np.zeros(3)
    for j in js:
        out, state = update(jnp.asarray(j), state)
        ema = 0.999 * ema + 0.001 * np.diag(j @ j.T)
    np.testing.assert_allclose(state.sq_norm_ema, ema, rtol=1e-12)
    assert int(state.count) == 3
    # The scales are per-task and debiased: scaling every row scales the first update.
    chex.assert_trees_all_close(_apply(4.0 * js[0])[0], 4.0 * _apply(js[0])[0], rtol=1e-6)


def test_non_finite_input_gives_nan_and_keeps_state():
    tx = mtlx.pcd(2)
    state = tx.init(None)
    out, new_state = jax.jit(tx.update)(jnp.array([[1.0, jnp.inf], [0.0, 1.0]]), state)
    assert bool(jnp.all(jnp.isnan(out)))
    chex.assert_trees_all_equal(new_state, state)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_tasks=0), "num_tasks"),
        (dict(num_tasks=3, tau=1.5), "tau"),
        (dict(num_tasks=3, tau=jnp.ones(3) * 0.1), "secondary"),
        (dict(num_tasks=3, beta=1.0), "beta"),
        (dict(num_tasks=3, eps=-1.0), "eps"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mtlx.pcd(**kwargs)


def test_vector_tau_and_wrong_number_of_tasks():
    j = strategies.random_jacobian(np.random.default_rng(4), 3, 5)
    tx = mtlx.pcd(3, tau=jnp.array([0.02, 0.02]))
    out, _ = jax.jit(tx.update)(jnp.asarray(j), tx.init(None))
    chex.assert_trees_all_close(out, _apply(j)[0], rtol=1e-9)
    with pytest.raises(ValueError, match="num_tasks=3"):
        tx.update(jnp.ones((2, 3)), tx.init(None))
