"""mtlx.graddrop: sign dropout per coordinate, against a NumPy reference fed the same draws.

GradDrop draws one uniform per shared coordinate, in the pytree's leaf order, so a pytree and its
flattening agree only in law: the shared contract's pytree == flat check does not apply, and the
rest of the contract (jit, retrace, scan, engine == rows) is checked here.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtlx
from tests import strategies


@functools.cache
def _jitted(leak=None):
    tx = mtlx.graddrop(leak=None if leak is None else jnp.asarray(leak))
    return tx, jax.jit(tx.update)


def _apply(j, seed=0, leak=None):
    tx, update = _jitted(leak)
    state = tx.init(None)._replace(key=jax.random.key(seed))
    return update(j, state)


def _draws(seed, size, dtype=jnp.float64):
    _, key = jax.random.split(jax.random.key(seed))
    return np.asarray(jax.random.uniform(key, (size,), dtype=dtype))


def _reference(j, u, leak):
    """Lines 10-15 of Algorithm 1 of Chen et al. (2020), row by row."""
    purity = 0.5 * (1.0 + j.sum(0) / np.abs(j).sum(0))
    out = np.zeros(j.shape[1])
    for i in range(j.shape[0]):
        mask = (purity > u) * (j[i] > 0) + (purity < u) * (j[i] < 0)
        out += (leak[i] + (1 - leak[i]) * mask) * j[i]
    return out


@pytest.mark.parametrize("num_tasks", [2, 5])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("leak", [None, (0.2, 0.9, 0.0, 0.5, 1.0)])
def test_matches_reference_with_the_same_draws(num_tasks, seed, leak):
    j = strategies.random_jacobian(np.random.default_rng(seed), num_tasks, 9, norm_spread=2.0)
    leak = None if leak is None else leak[:num_tasks]
    out, state = _apply(jnp.asarray(j), seed, leak)
    expected = _reference(j, _draws(seed, 9), np.zeros(num_tasks) if leak is None else leak)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    initial_key = jax.random.key_data(jax.random.key(seed))
    assert not jnp.array_equal(jax.random.key_data(state.key), initial_key)


def test_each_coordinate_keeps_one_sign():
    j = strategies.random_jacobian(np.random.default_rng(3), 5, 9)
    positive, negative = np.where(j > 0, j, 0).sum(0), np.where(j < 0, j, 0).sum(0)
    for seed in range(4):
        out = np.asarray(_apply(jnp.asarray(j), seed)[0])
        assert np.all(np.isclose(out, positive) | np.isclose(out, negative))
    tree = _apply(jax.tree.map(jnp.asarray, strategies.as_pytree(j)))[0]
    out = strategies.flatten_pytree(tree)
    assert np.all(np.isclose(out, positive) | np.isclose(out, negative))


def test_sum_without_mixed_signs_or_with_full_leak():
    rng = np.random.default_rng(4)
    j = np.abs(rng.standard_normal((3, 6))) * np.sign(rng.standard_normal(6))  # signs per column
    chex.assert_trees_all_close(_apply(jnp.asarray(j))[0], jnp.asarray(j.sum(0)), atol=1e-12)
    k = rng.standard_normal((3, 6))
    chex.assert_trees_all_close(_apply(jnp.asarray(k), leak=(1.0,) * 3)[0], jnp.asarray(k.sum(0)))


def test_keeps_the_positive_sign_with_probability_purity():
    j = jnp.array([[3.0], [-1.0]])  # purity P = 0.75
    tx = mtlx.graddrop()
    outs = jax.vmap(lambda k: tx.update(j, tx.init(None)._replace(key=k))[0])(
        jax.random.split(jax.random.key(0), 2000)
    )
    frac = float(jnp.mean(outs[:, 0] > 0))
    assert abs(frac - 0.75) < 0.04, frac


def test_homogeneous_and_zero_rows():
    j = jnp.asarray(strategies.random_jacobian(np.random.default_rng(5), 3, 4))
    chex.assert_trees_all_close(_apply(7.0 * j, 2)[0], 7.0 * _apply(j, 2)[0], rtol=1e-12)
    zero = _apply(jnp.zeros((3, 4)))[0]
    chex.assert_trees_all_equal(zero, jnp.zeros(4))


def test_no_retrace_scan_and_engine():
    tx = mtlx.graddrop()
    chex.clear_trace_counter()
    update = jax.jit(chex.assert_max_traces(tx.update, n=1))
    state = tx.init(None)
    j = jnp.asarray(strategies.random_jacobian(np.random.default_rng(6), 3, 4))
    outs = []
    for _ in range(3):
        out, state = update(j, state)
        outs.append(out)
    assert not np.allclose(outs[0], outs[1]) or not np.allclose(outs[1], outs[2])

    def step(state, c):
        out, state = tx.update(c * j, state)
        return state, out

    _, scanned = jax.lax.scan(step, tx.init(None), jnp.ones(3))
    chex.assert_trees_all_close(scanned, jnp.stack(outs), rtol=1e-12)

    params = {"w": jnp.array([[0.3, -0.2], [0.1, 0.4]]), "b": jnp.array([0.1, -0.1])}
    x = jnp.linspace(-1.0, 1.0, 8).reshape(4, 2)

    def loss_fn(p, x):
        h = jnp.tanh(x @ p["w"] + p["b"])
        return jnp.stack([jnp.mean(h[:, 0] ** 2), jnp.mean((h[:, 1] - 1) ** 2), jnp.mean(h[:, 1])])

    losses, jac = mtlx.value_and_jacobian(loss_fn)(params, x)
    out_engine, _ = jax.jit(tx.update)(jac, tx.init(params), params, task_losses=losses)
    out_rows, _ = jax.jit(tx.update)(jax.jacrev(loss_fn)(params, x), tx.init(params), params)
    chex.assert_trees_all_close(out_engine, out_rows, rtol=1e-10, atol=1e-12)


def test_bad_leak_raises():
    with pytest.raises(ValueError, match="vector"):
        mtlx.graddrop(leak=jnp.ones((2, 2)))
    tx = mtlx.graddrop(leak=jnp.ones(3))
    with pytest.raises(ValueError, match="3 entries"):
        tx.update(jnp.ones((2, 4)), tx.init(None))
