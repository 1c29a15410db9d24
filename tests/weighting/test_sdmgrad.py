"""mtlx.sdmgrad: a NumPy transcription of the inner solver, limits in lambda_, warm start, state."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtlx
from tests import strategies

J_BASE = jnp.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])


def _project(y):
    """The sort-based simplex projection of the official code (TorchJD's project_onto_simplex)."""
    m = len(y)
    u = np.sort(y)[::-1]
    tmax = (y.sum() - 1.0) / m
    for i in range(m - 1):
        candidate = (u[: i + 1].sum() - 1.0) / (i + 1.0)
        if candidate > u[i + 1]:
            tmax = candidate
            break
    return np.maximum(y - tmax, 0.0)


def _numpy_sdmgrad(a, w, lr=10.0, momentum=0.5, n_iter=20, lambda_=0.3, pref=None):
    m = a.shape[0]
    pref = np.full(m, 1.0 / m) if pref is None else pref
    scale = np.sqrt(np.maximum(np.diag(a), 0.0)).mean()
    a = a / (scale**2 + 1e-8)
    velocity = None
    for _ in range(n_iter):
        grad = a @ (w + lambda_ * pref)
        velocity = grad if velocity is None else momentum * velocity + grad
        w = _project(w - lr * velocity)
    return (w + lambda_ * pref) / (1 + lambda_), w


@functools.cache
def _transform(num_tasks, **kwargs):
    tx = mtlx.sdmgrad(num_tasks, **kwargs)
    return tx, jax.jit(tx.update)


@pytest.mark.parametrize("symmetric", [True, False])
def test_matches_the_update_equations_over_steps(symmetric):
    rng = np.random.default_rng(0)
    tx, update = _transform(4)
    state = tx.init(jnp.zeros(5))
    for _ in range(4):
        j1 = strategies.random_jacobian(rng, 4, 5, norm_spread=1.0)
        a = j1 @ j1.T if symmetric else j1 @ strategies.random_jacobian(rng, 4, 5).T
        # Each step from our own state: with lr = 10 the inner solver amplifies rounding ~100x per
        # step, so two exact implementations drift apart over many steps (TorchJD's parity test
        # checks the whole sequence with cosines).
        weights, w = _numpy_sdmgrad(a, np.asarray(state.inner_weights))
        out, state = update(jnp.asarray(j1), state, gramian=jnp.asarray(a))
        np.testing.assert_allclose(state.inner_weights, w, rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(out, weights @ j1, rtol=1e-9, atol=1e-10)


def test_two_tasks_without_preference_pull_is_mgda():
    """lambda_ = 0 with a small step converges to the min-norm point of the two rows."""
    g = J_BASE @ J_BASE.T
    weights, _ = mtlx.sdmgrad_weights(
        g, jnp.full(2, 0.5), lr=0.05, momentum=0.0, n_iter=500, lambda_=0.0
    )
    np.testing.assert_allclose(weights, [0.6, 0.4], atol=1e-6)  # TorchJD's MGDA weights on J_BASE


def test_a_strong_preference_pull_gives_the_preference():
    g = J_BASE @ J_BASE.T
    pref = jnp.array([0.2, 0.8])
    weights, _ = mtlx.sdmgrad_weights(g, jnp.full(2, 0.5), lambda_=1e8, pref_vector=pref)
    np.testing.assert_allclose(weights, pref, rtol=1e-6)


def test_scale_free_and_warm_started():
    rng = np.random.default_rng(1)
    j = jnp.asarray(strategies.random_jacobian(rng, 3, 4))
    w0 = jnp.array([0.2, 0.5, 0.3])
    a, w_a = mtlx.sdmgrad_weights(j @ j.T, w0)
    b, w_b = mtlx.sdmgrad_weights(1e4 * (j @ j.T), w0)
    np.testing.assert_allclose(a, b, rtol=1e-8)
    # The state is the warm start: starting elsewhere gives other weights after few iterations.
    c, _ = mtlx.sdmgrad_weights(j @ j.T, jnp.array([1.0, 0.0, 0.0]), n_iter=1)
    d, _ = mtlx.sdmgrad_weights(j @ j.T, w0, n_iter=1)
    assert not np.allclose(c, d)
    np.testing.assert_allclose(np.sum(a), 1.0, rtol=1e-12)


def test_state_survives_scan():
    rng = np.random.default_rng(2)
    jacs = jnp.asarray(np.stack([strategies.random_jacobian(rng, 3, 4) for _ in range(4)]))
    tx, update = _transform(3)

    def step(state, j):
        out, state = tx.update(j, state)
        return state, out

    final, outs = jax.jit(lambda s, js: jax.lax.scan(step, s, js))(tx.init(None), jacs)
    state = tx.init(None)
    for k in range(4):
        out, state = update(jacs[k], state)
        np.testing.assert_allclose(outs[k], out, rtol=1e-10, atol=1e-12)
    chex.assert_trees_all_close(final, state)


def test_errors():
    for kwargs, match in [
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"momentum": 1.0}, "momentum"),
        ({"max_iters": 0}, "max_iters"),
        ({"lambda_": -0.1}, "lambda_"),
        ({"pref_vector": jnp.ones(3)}, "pref_vector"),
    ]:
        with pytest.raises(ValueError, match=match):
            mtlx.sdmgrad(2, **kwargs)
    tx = mtlx.sdmgrad(3)
    with pytest.raises(ValueError, match="tasks"):
        tx.update(J_BASE, tx.init(None))
