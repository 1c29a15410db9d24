"""mtlx.uw: weights 1/2 exp(-s), the log-variances' optimizer step, convergence to s = log L."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtlx
from tests.weighting.test_rlw import T, _loss_fn, _model, count_matmuls, is_shared, step_jaxpr

LOSSES = jnp.array([0.5, 2.0, 8.0])


@functools.cache
def _sgd_uw(learning_rate):
    tx = mtlx.uw(3, learning_rate, optimizer=optax.sgd)
    return tx, jax.jit(tx.update)


def test_initial_weights_follow_init_log_var():
    for init, expected in [(0.0, 0.5), (-0.5, 0.5 * np.exp(0.5))]:
        tx = mtlx.uw(3, init_log_var=init)
        out, _ = tx.update(jnp.eye(3), tx.init(None), task_losses=LOSSES)
        np.testing.assert_allclose(out, expected, rtol=1e-12)
    tx = mtlx.uw(3, init_log_var=jnp.array([0.0, 1.0, 2.0]))
    np.testing.assert_allclose(tx.init(None).log_vars, [0.0, 1.0, 2.0])


def test_one_sgd_step_on_the_log_variances_by_hand():
    tx, update = _sgd_uw(0.1)
    state = tx.init(None)._replace(log_vars=jnp.array([0.0, 1.0, -1.0]))
    out, state = update(jnp.eye(3), state, task_losses=LOSSES)
    s = np.array([0.0, 1.0, -1.0])
    np.testing.assert_allclose(out, 0.5 * np.exp(-s), rtol=1e-12)  # weights at the old s
    grad = 0.5 * (1.0 - np.exp(-s) * np.asarray(LOSSES))
    np.testing.assert_allclose(state.log_vars, s - 0.1 * grad, rtol=1e-12)
    np.testing.assert_allclose(mtlx.uw_log_var_grad(jnp.asarray(s), LOSSES), grad, rtol=1e-12)


def test_log_variances_converge_to_log_loss_and_weights_to_one_over_two_loss():
    tx, update = _sgd_uw(0.5)

    def step(state, _):
        out, state = update(jnp.eye(3), state, task_losses=LOSSES)
        return state, out

    state, outs = jax.lax.scan(step, tx.init(None), None, length=400)
    np.testing.assert_allclose(state.log_vars, np.log(LOSSES), atol=1e-6)
    np.testing.assert_allclose(outs[-1], 0.5 / np.asarray(LOSSES), rtol=1e-5)


def test_default_adam_moves_each_log_variance_by_about_the_learning_rate():
    tx = mtlx.uw(3, learning_rate=0.01)
    _, state = tx.update(jnp.eye(3), tx.init(None), task_losses=LOSSES)
    # first Adam step: -lr * sign(grad); grad = 1/2 (1 - L) is positive for L < 1
    expected = -0.01 * np.sign(0.5 * (1 - np.asarray(LOSSES)))
    np.testing.assert_allclose(state.log_vars, expected, rtol=1e-6)


def test_update_is_the_models_gradient_of_the_uw_objective():
    params, x, y = _model()
    engine = mtlx.value_and_jacobian(_loss_fn, shared=is_shared)
    losses, jac = engine(params, x, y)
    tx = mtlx.uw(T, init_log_var=jnp.array([0.3, -0.2, 0.0]))
    state = tx.init(params)
    out, _ = tx.update(jac, state, params, task_losses=losses)

    def objective(p, s):
        return jnp.sum(0.5 * jnp.exp(-s) * _loss_fn(p, x, y) + 0.5 * s)

    chex.assert_trees_all_close(out, jax.grad(objective)(params, state.log_vars), rtol=1e-10)
    np.testing.assert_allclose(
        mtlx.uw_log_var_grad(state.log_vars, losses),
        jax.grad(objective, 1)(params, state.log_vars),
        rtol=1e-10,
    )


def test_one_backward_pass_with_the_engine():
    jaxpr, shapes = step_jaxpr(mtlx.uw(T))
    assert (T, 8, 6) not in shapes
    ew_jaxpr, _ = step_jaxpr(mtlx.ew())
    assert count_matmuls(jaxpr) == count_matmuls(ew_jaxpr)


def test_state_dtype_is_stable_with_float32_losses():
    tx = mtlx.uw(3)
    state = tx.init(None)
    j, losses = jnp.eye(3, dtype=jnp.float32), LOSSES.astype(jnp.float32)
    _, new_state = tx.update(j, state, task_losses=losses)
    chex.assert_trees_all_equal_dtypes(new_state, state)


def test_inject_hyperparams_learning_rate():
    factory = optax.inject_hyperparams(mtlx.uw, static_args=("num_tasks", "optimizer"))
    tx = factory(num_tasks=3, learning_rate=0.1, optimizer=optax.sgd)
    _, state = jax.jit(tx.update)(jnp.eye(3), tx.init(None), task_losses=LOSSES)
    reference, _ = _sgd_uw(0.1)
    _, expected = reference.update(jnp.eye(3), reference.init(None), task_losses=LOSSES)
    np.testing.assert_allclose(state.inner_state.log_vars, expected.log_vars, rtol=1e-12)


def test_wrong_number_of_tasks_raises():
    tx = mtlx.uw(4)
    with pytest.raises(ValueError, match="num_tasks=4"):
        tx.update(jnp.eye(3), tx.init(None), task_losses=LOSSES)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_tasks=0), "num_tasks"),
        (dict(num_tasks=None), "num_tasks"),
        (dict(num_tasks=3, init_log_var=jnp.zeros(2)), "init_log_var"),
        (dict(num_tasks=3, init_log_var=float("nan")), "init_log_var"),
    ],
)
def test_bad_hyperparameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mtlx.uw(**kwargs)


@pytest.mark.parametrize("factory", ["uw", "imtl_l", "imtl"])
def test_a_huge_loss_does_not_freeze_the_learned_scales_in_float32(factory):
    # UW's inner gradient 1 - exp(-s) L is -1e30 at L = 1e30: optax.adam's second moment would be
    # inf (1e60 in float32) for good, and every later step 0. The default inner Adam keeps
    # sqrt(nu) instead: the scale keeps moving, by about the learning rate per step.
    jac = jnp.eye(2, dtype=jnp.float32)
    tx = getattr(mtlx, factory)(2, learning_rate=0.1)
    state = tx.init(jnp.zeros(2, jnp.float32))
    scales = []
    for losses in ([1e30, 1.0], [1e30, 1.0], [1.0, 1.0], [1.0, 1.0]):
        update, state = jax.jit(tx.update)(
            jac, state, jnp.zeros(2, jnp.float32), task_losses=jnp.asarray(losses, jnp.float32)
        )
        assert np.all(np.isfinite(np.asarray(update)))
        assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(state))
        scales.append(np.asarray(state.log_vars if factory == "uw" else state.log_scales))
    # The huge-loss task's scale still moves after the huge losses are gone.
    assert abs(float(scales[3][0]) - float(scales[2][0])) > 1e-3


@pytest.mark.parametrize("factory", ["uw", "imtl_l", "imtl", "gradnorm", "famo"])
def test_a_step_may_donate_the_state_of_the_default_inner_optimizer(factory):
    # The inner Adam's two moments must be arrays of their own: one array in both fields made a
    # state-donating step fail with "donate the same buffer twice".
    tx = optax.chain(getattr(mtlx, factory)(2), optax.sgd(0.1))
    params = jnp.zeros(2, jnp.float32)

    @functools.partial(jax.jit, donate_argnums=(0,))
    def step(state, jac, losses):
        return tx.update(jac, state, params, task_losses=losses)[1]

    state = tx.init(params)
    for _ in range(2):
        state = step(state, jnp.eye(2, dtype=jnp.float32), jnp.array([1.0, 2.0], jnp.float32))
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(state))
