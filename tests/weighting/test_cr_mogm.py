"""mtlx.cr_mogm: the EMA rule, both ways of naming the wrapped method, its state, its limits."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtlx
from tests import strategies

J_BASE = jnp.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])


def _jacobians(num_tasks=3, steps=5, seed=0):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(strategies.random_jacobian(rng, num_tasks, 5)) for _ in range(steps)]


@functools.cache
def _transform(name, alpha=0.9, initial=None):
    weighting = {
        "mgda_weights": mtlx.mgda_weights,
        "mgda": mtlx.mgda(),
        "pcgrad": mtlx.pcgrad(seed=3),
        "excess_mtl": mtlx.excess_mtl(3),
    }[name]
    tx = mtlx.cr_mogm(weighting, 3, alpha=alpha, initial_weights=initial)
    return tx, jax.jit(tx.update)


def _run(name, jacs, **kwargs):
    tx, update = _transform(name, **kwargs)
    state = tx.init(jnp.zeros(5))
    outs = []
    for j in jacs:
        out, state = update(j, state)
        outs.append((np.asarray(out), np.asarray(state.weights)))
    return outs, state


@pytest.mark.parametrize("initial", [None, (0.2, 0.3, 0.5)])
def test_weights_are_the_ema_of_the_wrapped_weights(initial):
    jacs = _jacobians()
    outs, _ = _run("mgda_weights", jacs, alpha=0.7, initial=initial)
    previous = None if initial is None else np.asarray(initial)
    for j, (out, weights) in zip(jacs, outs):
        new = np.asarray(mtlx.mgda_weights(j @ j.T))
        previous = new if previous is None else previous
        previous = 0.7 * previous + 0.3 * new
        np.testing.assert_allclose(weights, previous, rtol=1e-12)
        np.testing.assert_allclose(out, previous @ np.asarray(j), rtol=1e-12)


def test_function_and_transform_forms_agree_and_the_first_step_is_the_wrapped_method():
    jacs = _jacobians(seed=1)
    by_function, _ = _run("mgda_weights", jacs)
    by_transform, _ = _run("mgda", jacs)
    for (a, _), (b, _) in zip(by_function, by_transform):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    mgda, _ = jax.jit(mtlx.mgda().update)(jacs[0], optax.EmptyState())
    np.testing.assert_allclose(by_function[0][0], mgda, rtol=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_alpha_limits(alpha):
    jacs = _jacobians(seed=2)
    outs, _ = _run("mgda_weights", jacs, alpha=alpha, initial=(0.2, 0.3, 0.5))
    for j, (out, weights) in zip(jacs, outs):
        wrapped = np.asarray(mtlx.mgda_weights(j @ j.T))
        expected = wrapped if alpha == 0.0 else np.array([0.2, 0.3, 0.5])
        np.testing.assert_allclose(weights, expected, rtol=1e-12)


def test_wraps_a_stateful_transform_and_keeps_its_state():
    jacs = _jacobians(seed=3)
    outs, state = _run("pcgrad", jacs, alpha=0.5)
    inner_tx = mtlx.pcgrad(seed=3)
    inner_state = inner_tx.init(None)
    previous = None
    for j, (_, weights) in zip(jacs, outs):
        next_key, key = jax.random.split(inner_state.key)
        new = np.asarray(mtlx.pcgrad_weights(j @ j.T, key))
        inner_state = inner_state._replace(key=next_key)
        previous = new if previous is None else 0.5 * previous + 0.5 * new
        np.testing.assert_allclose(weights, previous, rtol=1e-12)
    np.testing.assert_array_equal(
        jax.random.key_data(state.inner.key), jax.random.key_data(inner_state.key)
    )


def test_wraps_a_rows_reading_method():
    """ExcessMTL reads rows and combines with weights: its weights can be smoothed too."""
    jacs = _jacobians(seed=4)
    outs, state = _run("excess_mtl", jacs, alpha=0.0)
    tx = mtlx.excess_mtl(3)
    inner = tx.init(jnp.zeros(5))
    for j, (out, _) in zip(jacs, outs):
        expected, inner = tx.update(j, inner)
        np.testing.assert_allclose(out, expected, rtol=1e-12)
    chex.assert_trees_all_close(state.inner, inner)


def test_constant_weights_are_unchanged_and_heads_are_treated_as_by_the_wrapped_method():
    weights = jnp.array([0.5, 2.0])
    tx = mtlx.cr_mogm(mtlx.scalarization(weights), 2, alpha=0.9)
    jac = mtlx.as_jacobian({"heads": jnp.ones((2, 2, 3)), "shared": J_BASE})
    jac = type(jac)(jac.rows(), shared_mask=(False, True))
    state = tx.init(None)
    for _ in range(3):
        out, state = tx.update(jac, state)
    np.testing.assert_allclose(out["shared"], weights @ J_BASE, rtol=1e-12)
    np.testing.assert_allclose(out["heads"], 2.5 * np.ones((2, 3)), rtol=1e-12)  # "weighted"


def test_state_survives_scan():
    jacs = jnp.stack(_jacobians(seed=5))
    tx, _ = _transform("pcgrad", alpha=0.5)

    def step(state, j):
        out, state = tx.update(j, state)
        return state, out

    final, outs = jax.jit(lambda s, js: jax.lax.scan(step, s, js))(tx.init(None), jacs)
    looped, state = _run("pcgrad", list(jacs), alpha=0.5)
    np.testing.assert_allclose(outs, np.stack([o for o, _ in looped]), rtol=1e-12)
    np.testing.assert_allclose(final.weights, state.weights, rtol=1e-12)


def test_errors():
    with pytest.raises(ValueError, match="alpha"):
        mtlx.cr_mogm(mtlx.mgda_weights, 2, alpha=1.5)
    with pytest.raises(ValueError, match="initial_weights"):
        mtlx.cr_mogm(mtlx.mgda_weights, 2, initial_weights=jnp.ones(3))
    with pytest.raises(ValueError, match="weighting"):
        mtlx.cr_mogm("mgda", 2)
    with pytest.raises(ValueError, match="num_tasks"):
        mtlx.cr_mogm(mtlx.mgda_weights, 0)
    tx = mtlx.cr_mogm(mtlx.mgda_weights, 3)
    with pytest.raises(ValueError, match="tasks"):
        tx.update(J_BASE, tx.init(None))
    # MoCo's update combines tracked gradients, not the rows: there are no weights to smooth,
    # and that is known when the wrapper is built.
    with pytest.raises(ValueError, match="not a weighting"):
        mtlx.cr_mogm(mtlx.moco(2), 2)
    with pytest.raises(ValueError, match="not a weighting"):
        mtlx.cr_mogm(mtlx.graddrop(), 2)
    with pytest.raises(ValueError, match="built for num_tasks=3"):
        mtlx.cr_mogm(mtlx.uw(3), 2)
