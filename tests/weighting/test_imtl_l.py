"""mtlx.imtl_l: IMTL-L, learned loss scales (Liu et al., ICLR 2021)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtlx

T = 3


@functools.cache
def _run(learning_rate, optimizer=optax.adam):
    tx = mtlx.imtl_l(T, learning_rate, optimizer=optimizer)

    @jax.jit
    def run(losses):
        def step(state, loss):
            out, state = tx.update(jnp.eye(T), state, None, task_losses=loss)
            return state, out

        return jax.lax.scan(step, tx.init(None), losses)

    return run


def test_first_update_is_the_plain_sum():
    tx = mtlx.imtl_l(T)
    jac = jnp.asarray(np.random.default_rng(0).standard_normal((T, 5)))
    out, _ = tx.update(jac, tx.init(None), None, task_losses=jnp.array([0.1, 1.0, 10.0]))
    np.testing.assert_allclose(out, jac.sum(0), rtol=1e-12)


def test_scale_gradient_is_the_derivative_of_the_objective():
    s, losses = jnp.array([0.3, -1.0, 2.0]), jnp.array([0.5, 2.0, 0.1])
    expected = jax.grad(lambda s: jnp.sum(jnp.exp(s) * losses - s))(s)
    np.testing.assert_allclose(mtlx.imtl_l_scale_gradient(s, losses), expected, rtol=1e-12)


def test_one_sgd_step_on_the_scales():
    losses = jnp.array([[0.5, 2.0, 4.0], [0.5, 2.0, 4.0]])
    _, weights = _run(0.1, optax.sgd)(losses)
    np.testing.assert_allclose(weights[0], np.ones(T))
    s1 = -0.1 * (np.asarray(losses[0]) - 1.0)  # s = 0 - lr (e^0 L - 1)
    np.testing.assert_allclose(weights[1], np.exp(s1), rtol=1e-12)


def test_scaled_losses_converge_to_one():
    losses = jnp.broadcast_to(jnp.array([0.01, 1.0, 50.0]), (1500, T))
    state, weights = _run(0.05)(losses)
    np.testing.assert_allclose(weights[-1] * losses[-1], np.ones(T), rtol=1e-2)
    np.testing.assert_allclose(state.log_scales, -np.log(losses[-1]), atol=1e-2)


def test_bad_num_tasks_raise():
    with pytest.raises(ValueError, match="num_tasks"):
        mtlx.imtl_l(0)
    tx = mtlx.imtl_l(2)
    with pytest.raises(ValueError, match="num_tasks=2"):
        tx.update(jnp.eye(3), tx.init(None), None, task_losses=jnp.ones(3))


def test_inject_hyperparams_with_static_structure():
    tx = optax.inject_hyperparams(mtlx.imtl_l, static_args=("num_tasks", "optimizer"))(
        num_tasks=T, learning_rate=0.1
    )
    state = tx.init(None)
    for _ in range(2):
        out, state = jax.jit(tx.update)(jnp.eye(T), state, None, task_losses=jnp.array([0.5, 1, 2]))
    ref = _run(0.1)(jnp.broadcast_to(jnp.array([0.5, 1.0, 2.0]), (2, T)))[1][-1]
    np.testing.assert_allclose(out, ref, rtol=1e-10)
