"""mtlx.dwa: Dynamic Weight Average (Liu et al., CVPR 2019)."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtlx

T = 3


@functools.cache
def _run(steps_per_epoch, temperature=2.0):
    """Jitted scan of DWA's updates on the identity Jacobian: the per-step weights."""
    tx = mtlx.dwa(T, temperature, steps_per_epoch)

    @jax.jit
    def run(losses):
        def step(state, loss):
            out, state = tx.update(jnp.eye(T), state, None, task_losses=loss)
            return state, out

        return jax.lax.scan(step, tx.init(None), losses)

    return run


def test_weights_known_value():
    w = mtlx.dwa_weights(jnp.ones(3), jnp.array([0.5, 1.0, 2.0]), 2.0)
    expected = 3 * np.exp([0.25, 0.5, 1.0]) / np.exp([0.25, 0.5, 1.0]).sum()
    np.testing.assert_allclose(w, expected, rtol=1e-12)


def test_equal_weights_for_two_epochs_then_epoch_average_ratios():
    losses = jnp.array(
        [[1.0, 2.0, 4.0], [3.0, 2.0, 4.0], [1.0, 1.0, 1.0], [1.0, 3.0, 1.0], [9.0, 9.0, 9.0]]
    )
    _, weights = _run(2)(losses)
    np.testing.assert_allclose(weights[:4], np.ones((4, T)))
    # epoch averages: [2, 2, 4] then [1, 2, 1] -> rates [0.5, 1, 0.25]
    expected = mtlx.dwa_weights(jnp.array([2.0, 2, 4]), jnp.array([1.0, 2, 1]))
    np.testing.assert_allclose(weights[4], expected)
    chex.assert_trees_all_close(weights[4].sum(), jnp.asarray(float(T)))


def test_state_rolls_the_epoch_averages():
    state, _ = _run(2)(jnp.array([[1.0, 2, 3], [3.0, 2, 1], [5.0, 5, 5]]))
    np.testing.assert_allclose(state.previous_averages, [[0.0, 0, 0], [2.0, 2, 2]])
    np.testing.assert_allclose(state.loss_sum, [5.0, 5, 5])
    assert int(state.epoch_steps) == 1 and int(state.num_epochs) == 1


def test_invariant_to_a_per_task_loss_scale():
    rng = np.random.default_rng(0)
    losses = rng.uniform(0.5, 2.0, (6, T))
    scale = np.array([1e-3, 1.0, 1e3])
    np.testing.assert_allclose(_run(1)(losses)[1], _run(1)(losses * scale)[1], rtol=1e-10)


def test_large_temperature_gives_equal_weights():
    losses = np.random.default_rng(1).uniform(0.5, 2.0, (4, T))
    np.testing.assert_allclose(_run(1, 1e8)(losses)[1], np.ones((4, T)), rtol=1e-6)


def test_the_slowest_task_gets_the_largest_weight():
    losses = jnp.array([[1.0, 1.0, 1.0], [0.5, 0.9, 0.99], [0.25, 0.8, 0.98]])
    weights = _run(1)(losses)[1][-1]
    assert weights[2] > weights[1] > weights[0]


def test_zero_losses_give_finite_weights():
    chex.assert_tree_all_finite(_run(1)(jnp.zeros((4, T)))[1])


def test_inject_hyperparams_temperature():
    tx = optax.inject_hyperparams(mtlx.dwa, static_args=("num_tasks", "steps_per_epoch"))(
        num_tasks=T, temperature=2.0
    )
    state = tx.init(None)
    for loss in ([1.0, 2.0, 3.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]):
        out, state = tx.update(jnp.eye(T), state, None, task_losses=jnp.asarray(loss))
    np.testing.assert_allclose(out, mtlx.dwa_weights(jnp.array([1.0, 2, 3]), jnp.ones(3)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_tasks=0), "num_tasks"),
        (dict(num_tasks=3, temperature=0.0), "temperature"),
        (dict(num_tasks=3, steps_per_epoch=0), "steps_per_epoch"),
    ],
)
def test_bad_hyperparameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mtlx.dwa(**kwargs)


def test_wrong_number_of_tasks_raises():
    tx = mtlx.dwa(4)
    with pytest.raises(ValueError, match="num_tasks=4"):
        tx.update(jnp.eye(3), tx.init(None), None, task_losses=jnp.ones(3))


def test_a_non_finite_loss_never_enters_the_history():
    """Inside jit (outside, a NaN loss is refused with an error before any weighting)."""
    tx = mtlx.dwa(num_tasks=2)
    params = jnp.zeros(3)
    jac = jnp.ones((2, 3))
    update_fn = jax.jit(lambda s, losses: tx.update(jac, s, params, task_losses=losses))
    state = tx.init(params)
    for losses in ([1.0, 2.0], [0.5, 1.0]):
        _, state = update_fn(state, jnp.array(losses))
    clean = state
    _, state = update_fn(state, jnp.array([jnp.nan, 1.0]))
    jax.tree.map(np.testing.assert_array_equal, state, clean)  # unchanged
    update, state = update_fn(state, jnp.array([0.25, 0.5]))
    assert np.all(np.isfinite(update)) and np.all(np.isfinite(state.previous_averages))
    np.testing.assert_allclose(update, jnp.full(3, 2.0), rtol=1e-6)  # equal rates: weights 1, 1
