"""mtlx.modo: the weight step, convergence to MGDA's weights, double sampling, state."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtlx
from tests import strategies

J_BASE = jnp.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])


@functools.cache
def _transform(num_tasks, gamma=0.1, rho=0.1):
    tx = mtlx.modo(num_tasks, learning_rate=gamma, rho=rho)
    return tx, jax.jit(tx.update)


def test_one_step_is_a_projected_gradient_step():
    g = np.array([[2.0, 0.5, -0.3], [0.5, 1.0, 0.2], [-0.3, 0.2, 3.0]])
    lam = np.array([0.5, 0.3, 0.2])
    # A small step stays inside the simplex: no clipping, and the projection only removes the mean.
    step = lam - 0.01 * (g @ lam + 0.1 * lam)
    expected = step - (step.sum() - 1.0) / 3
    out = mtlx.modo_weights(jnp.asarray(g), jnp.asarray(lam), gamma=0.01, rho=0.1)
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_first_update_on_j_base():
    tx, update = _transform(2)
    out, state = update(J_BASE, tx.init(jnp.zeros(3)))
    # lambda - 0.1 (G lambda + 0.1 lambda) = [0.5, 0.5] - 0.1 [-4.95, 15.05] -> projected to [1, 0].
    np.testing.assert_allclose(state.weights, [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(out, J_BASE[0], atol=1e-12)


def test_iterates_converge_to_the_min_norm_weights_of_mgda():
    """With rho = 0, MoDo's weight iteration is projected gradient descent on |J^T lambda|^2 / 2."""
    j = jnp.asarray(strategies.random_jacobian(np.random.default_rng(0), 3, 5, rank=2))
    gramian = j @ j.T
    step = 0.5 / jnp.linalg.eigvalsh(gramian)[-1]

    def body(lam, _):
        return mtlx.modo_weights(gramian, lam, gamma=step, rho=0.0), None

    lam, _ = jax.lax.scan(body, jnp.full(3, 1 / 3), None, length=3000)
    reference = mtlx.mgda_weights(gramian, epsilon=1e-12, max_iters=20000)
    np.testing.assert_allclose(lam @ j, reference @ j, atol=1e-5)


def test_uses_the_cross_gramian_when_given():
    rng = np.random.default_rng(1)
    j1, j2, j3 = (jnp.asarray(strategies.random_jacobian(rng, 3, 4)) for _ in range(3))
    cross = mtlx.cross_gramian(j1, j2)
    np.testing.assert_allclose(cross, j1 @ j2.T, rtol=1e-12)
    tx, update = _transform(3, gamma=0.05)
    state = tx.init(jnp.zeros(4))
    out, new_state = update(j3, state, gramian=cross)
    expected = mtlx.modo_weights(cross, state.weights, gamma=0.05, rho=0.1)
    np.testing.assert_allclose(new_state.weights, expected, rtol=1e-12)
    np.testing.assert_allclose(out, expected @ j3, rtol=1e-12)


def test_weights_stay_on_the_simplex_and_state_survives_scan():
    rng = np.random.default_rng(2)
    jacs = jnp.asarray(np.stack([strategies.random_jacobian(rng, 4, 6) for _ in range(5)]))
    tx, update = _transform(4, gamma=0.3)

    def step(state, j):
        out, state = tx.update(j, state)
        return state, (out, state.weights)

    scan = jax.jit(lambda s, js: jax.lax.scan(step, s, js))
    final, (outs, weights) = scan(tx.init(jnp.zeros(6)), jacs)
    state = tx.init(jnp.zeros(6))
    for k in range(5):
        out, state = update(jacs[k], state)
        np.testing.assert_allclose(outs[k], out, rtol=1e-12)
    chex.assert_trees_all_close(final, state)
    assert np.all(np.asarray(weights) >= 0)
    np.testing.assert_allclose(np.asarray(weights).sum(1), 1.0, rtol=1e-12)


def test_errors():
    with pytest.raises(ValueError, match="learning_rate"):
        mtlx.modo(2, learning_rate=0.0)
    with pytest.raises(ValueError, match="rho"):
        mtlx.modo(2, rho=-1.0)
    with pytest.raises(ValueError, match="num_tasks"):
        mtlx.modo(0)
    tx = mtlx.modo(3)
    with pytest.raises(ValueError, match="tasks"):
        tx.update(J_BASE, tx.init(None))
    with pytest.raises(ValueError, match="gramian"):
        mtlx.modo(2).update(J_BASE, mtlx.modo(2).init(None), gramian=jnp.eye(3))
