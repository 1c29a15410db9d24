"""mtlx.db_mtl: Dual-Balancing Multi-Task Learning (Lin et al., 2023), LibMTL's DB_MTL."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtlx

T = 3
RNG = np.random.default_rng(0)
JAC = jnp.asarray(RNG.standard_normal((T, 5)) * np.array([[0.1], [1.0], [10.0]]))
LOSSES = jnp.array([0.5, 2.0, 8.0])


def _update(tx, jac, losses, state=None):
    state = tx.init(jnp.zeros(jac.shape[1:])) if state is None else state
    return jax.jit(tx.update)(jac, state, None, task_losses=losses)


def test_every_balanced_term_has_the_largest_norm():
    out, state = _update(mtlx.db_mtl(T, beta=0.0), JAC, LOSSES)
    log_rows = JAC / (LOSSES[:, None] + 1e-8)
    np.testing.assert_allclose(state.grad_buffer, log_rows, rtol=1e-12)  # beta = 0: no memory
    norms = np.linalg.norm(log_rows, axis=1)
    alpha = mtlx.db_mtl_weights(norms**2)
    np.testing.assert_allclose(alpha * norms, np.full(T, norms.max()), rtol=1e-6)
    np.testing.assert_allclose(out, alpha @ log_rows, rtol=1e-12)


def test_first_step_ema_from_zero_and_second_step_memory():
    tx = mtlx.db_mtl(T, beta=0.9)
    _, state = _update(tx, JAC, LOSSES)
    np.testing.assert_allclose(state.grad_buffer, 0.1 * JAC / LOSSES[:, None], rtol=1e-6)
    _, state = _update(tx, 2 * JAC, LOSSES, state)
    expected = (2.0 + 0.9 * (0.1 - 2.0)) * JAC / LOSSES[:, None]  # g2 + beta (m1 - g2), g2 = 2 g
    np.testing.assert_allclose(state.grad_buffer, expected, rtol=1e-6)
    assert int(state.count) == 2


def test_invariant_to_a_per_task_loss_scale():
    # L_t -> c_t L_t scales the gradient g_t by c_t: the log-loss gradient does not change
    c = jnp.array([1e-3, 1.0, 1e3])
    tx = mtlx.db_mtl(T)
    np.testing.assert_allclose(
        _update(tx, c[:, None] * JAC, c * LOSSES)[0], _update(tx, JAC, LOSSES)[0], rtol=1e-6
    )


def test_task_specific_leaves_get_their_own_log_loss_gradient():
    x = jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)
    heads = jnp.array([[1.0, 0.5], [-0.5, 1.0], [0.2, 0.2]])
    params = {"trunk": jnp.full((3, 2), 0.3), "heads": heads}

    def loss_fn(p, x):
        h = jnp.tanh(x @ p["trunk"])
        return jnp.mean((h @ p["heads"].T - 0.5) ** 2, axis=0)

    engine = mtlx.value_and_jacobian(loss_fn, shared={"trunk": True, "heads": False})
    losses, jac = engine(params, x)
    tx = mtlx.db_mtl(T)
    out, _ = jax.jit(tx.update)(jac, tx.init(params), params, task_losses=losses)
    heads_grad = jax.grad(lambda h: jnp.sum(jnp.log(loss_fn({**params, "heads": h}, x) + 1e-8)))
    np.testing.assert_allclose(out["heads"], heads_grad(params["heads"]), rtol=1e-6)


def test_init_needs_the_params_and_update_checks_them():
    with pytest.raises(ValueError, match="init"):
        mtlx.db_mtl(T).init(None)
    tx = mtlx.db_mtl(T)
    with pytest.raises(ValueError, match="initialised"):
        tx.update(JAC, tx.init(jnp.zeros(4)), None, task_losses=LOSSES)


def test_zero_rows_and_zero_losses_are_finite():
    out, _ = _update(mtlx.db_mtl(T), jnp.zeros((T, 5)), jnp.zeros(T))
    np.testing.assert_array_equal(out, 0.0)


def test_bad_hyperparameters_raise():
    with pytest.raises(ValueError, match="beta"):
        mtlx.db_mtl(T, beta=-0.1)
    with pytest.raises(ValueError, match="num_tasks"):
        mtlx.db_mtl(0)


@pytest.mark.parametrize("losses", [[0.0, 1.0], [-0.5, 1.0]])
def test_zero_or_negative_concrete_losses_are_refused_with_the_reason(losses):
    tx = mtlx.db_mtl(2)
    jac = jnp.eye(2)
    with pytest.raises(ValueError, match=r"every loss must be > 0.*1e8"):
        tx.update(jac, tx.init(jnp.zeros(2)), jnp.zeros(2), task_losses=jnp.asarray(losses))
    # Inside jit nothing is checked: the result is finite (the documented ~1e8 scale).
    out, _ = jax.jit(tx.update)(
        jac, tx.init(jnp.zeros(2)), jnp.zeros(2), task_losses=jnp.asarray(losses)
    )
    assert np.all(np.isfinite(np.asarray(out)))
