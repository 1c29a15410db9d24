"""mtlx.famo: FAMO (Liu et al., NeurIPS 2023)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtlx

T = 3


@functools.cache
def _run(learning_rate=0.025, gamma=1e-3):
    tx = mtlx.famo(T, gamma=gamma, learning_rate=learning_rate)

    @jax.jit
    def run(losses):
        def step(state, loss):
            out, state = tx.update(jnp.eye(T), state, None, task_losses=loss)
            return state, out

        return jax.lax.scan(step, tx.init(None), losses)

    return run


def test_first_update_weights_the_inverse_losses():
    losses = jnp.array([[0.5, 2.0, 4.0]])
    state, weights = _run()(losses)
    inv = 1.0 / np.asarray(losses[0])
    np.testing.assert_allclose(weights[0], inv / inv.sum(), rtol=1e-7)
    # no logits step without previous losses: logits and the Adam step count stay at 0
    np.testing.assert_array_equal(state.logits, 0.0)
    assert int(jax.tree.leaves(state.logits_opt_state)[0]) == 0


def test_weights_are_a_convex_combination():
    w = mtlx.famo_weights(jnp.array([0.3, -1.0, 2.0]), jnp.array([0.5, 2.0, 0.1]))
    assert np.all(w >= 0)
    np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-12)


def test_weights_are_the_gradient_of_the_normalised_log_objective():
    logits, losses = jnp.array([0.3, -1.0, 2.0]), jnp.array([0.5, 2.0, 0.1])
    z = jax.nn.softmax(logits)
    c = jnp.sum(z / losses)
    expected = jax.grad(lambda l: jnp.sum(z * jnp.log(l)) / c)(losses)
    np.testing.assert_allclose(mtlx.famo_weights(logits, losses, epsilon=0.0), expected, rtol=1e-12)


def test_logits_gradient_is_the_softmax_vjp_of_the_decrease():
    logits = jnp.array([0.3, -1.0, 2.0])
    before, after = jnp.array([1.0, 2.0, 3.0]), jnp.array([0.5, 1.9, 3.0])
    delta = jnp.log(before + 1e-8) - jnp.log(after + 1e-8)
    expected = jax.vjp(jax.nn.softmax, logits)[1](delta)[0]
    np.testing.assert_allclose(
        mtlx.famo_logits_gradient(logits, before, after), expected, rtol=1e-10
    )


def test_a_task_whose_loss_stalls_gains_weight():
    steps = np.arange(40)[:, None]
    losses = np.concatenate([np.exp(-0.1 * steps), np.exp(-0.1 * steps), np.ones((40, 1))], 1)
    _, weights = _run()(jnp.asarray(losses))
    # normalised by the inverse-loss factor, the weights are softmax(logits): compare those
    z = weights[-1] * losses[-1] / np.sum(weights[-1] * losses[-1])
    assert z[2] > 0.4 and z[0] < 0.35, z


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="min_losses"):
        mtlx.famo(3, min_losses=jnp.zeros(2))
    with pytest.raises(ValueError, match="learning_rate"):
        mtlx.famo(3, learning_rate=-1.0)
    tx = mtlx.famo(2, min_losses=jnp.array([0.5, 0.0]))
    with pytest.raises(ValueError, match="min_losses"):
        tx.update(jnp.eye(2), tx.init(None), None, task_losses=jnp.array([0.1, 1.0]))


def test_loss_at_its_bound_gives_finite_weights():
    w = mtlx.famo_weights(jnp.zeros(3), jnp.array([0.0, 1.0, 2.0]))
    assert np.all(np.isfinite(w))
    np.testing.assert_allclose(w.sum(), 1.0)
