"""mtlx.stch: smooth Tchebycheff scalarization (Lin et al., ICML 2024)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtlx

T = 3
LOSSES = jnp.array([0.5, 2.0, 1.0])


def _objective(losses, mu, pref, reference):
    return mu * jax.nn.logsumexp(pref * (losses - reference) / mu)


@pytest.mark.parametrize("mu", [0.1, 1.0, 10.0])
def test_weights_are_the_gradient_of_the_objective(mu):
    pref, reference = jnp.array([0.2, 0.5, 0.3]), jnp.array([0.1, 0.0, 0.2])
    expected = jax.grad(_objective)(LOSSES, mu, pref, reference)
    np.testing.assert_allclose(mtlx.stch_weights(LOSSES, mu, pref, reference), expected, rtol=1e-12)
    tx = mtlx.stch(mu, pref, reference)
    out, _ = tx.update(jnp.eye(T), tx.init(None), None, task_losses=LOSSES)
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_default_preference_is_uniform_and_weights_sum_to_one_over_t():
    w = mtlx.stch_weights(LOSSES, 1.0)
    np.testing.assert_allclose(w, jax.grad(_objective)(LOSSES, 1.0, jnp.full(T, 1 / T), 0.0))
    np.testing.assert_allclose(w.sum(), 1 / T)


def test_small_mu_approaches_tchebycheff_and_stays_finite():
    w = mtlx.stch_weights(1e6 * LOSSES, 1e-3)  # exp(1e9) would overflow without the max shift
    np.testing.assert_allclose(w, [0.0, 1 / T, 0.0], atol=1e-12)


def test_large_mu_approaches_the_preference_over_t():
    np.testing.assert_allclose(mtlx.stch_weights(LOSSES, 1e9), np.full(T, 1 / T**2), rtol=1e-6)


@functools.cache
def _run_warmup(warmup_steps, nadir_steps, mu=0.5):
    tx = mtlx.stch(mu, warmup_steps=warmup_steps, nadir_steps=nadir_steps, num_tasks=T)

    @jax.jit
    def run(losses):
        def step(state, loss):
            out, state = tx.update(jnp.eye(T), state, None, task_losses=loss)
            return state, out

        return jax.lax.scan(step, tx.init(None), losses)

    return run


def test_warmup_log_losses_then_stch_on_nadir_normalised_log_losses():
    losses = jnp.array([[9.0, 9.0, 9.0], [1.0, 2.0, 4.0], [3.0, 2.0, 2.0], [1.0, 1.0, 1.0]])
    state, weights = _run_warmup(3, 2)(losses)
    np.testing.assert_allclose(weights[:3], 1.0 / losses[:3], rtol=1e-12)  # grad of sum log L
    nadir = np.array([2.0, 2.0, 3.0])  # mean of the last two warm-up steps
    np.testing.assert_allclose(state.loss_sum / 2, nadir)
    expected = jax.grad(lambda l: _objective(jnp.log(l / nadir), 0.5, jnp.full(T, 1 / T), 0.0))(
        losses[3]
    )
    np.testing.assert_allclose(weights[3], expected, rtol=1e-9)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mu=0.0), "mu"),
        (dict(warmup_steps=2), "num_tasks"),
        (dict(warmup_steps=2, nadir_steps=3, num_tasks=2), "nadir_steps"),
        (dict(pref_vector=jnp.ones((2, 2))), "pref_vector"),
    ],
)
def test_bad_hyperparameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mtlx.stch(**kwargs)


def test_preference_of_the_wrong_length_raises():
    tx = mtlx.stch(pref_vector=jnp.ones(2))
    with pytest.raises(ValueError, match="pref_vector"):
        tx.update(jnp.eye(3), tx.init(None), None, task_losses=jnp.ones(3))


@pytest.mark.parametrize("losses", [[0.0, 1.0], [-1.0, 1.0]])
def test_the_warm_up_refuses_losses_outside_its_logarithms_domain(losses):
    tx = mtlx.stch(num_tasks=2, warmup_steps=2)
    params = jnp.zeros(3)
    jac = jnp.ones((2, 3))
    with pytest.raises(ValueError, match="losses must be > 0.*warmup_steps=0"):
        tx.update(jac, tx.init(params), params, task_losses=jnp.array(losses))
    plain = mtlx.stch()  # no logarithms without the warm-up: zero losses are fine
    update, _ = plain.update(jac, plain.init(params), params, task_losses=jnp.array(losses))
    assert np.all(np.isfinite(update))
