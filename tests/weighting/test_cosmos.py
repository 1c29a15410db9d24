"""mtlx.cosmos: COSMOS scalarization (Ruchte & Grabocka, ICDM 2021)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtlx

LOSSES = jnp.array([0.5, 2.0, 1.0])
PREF = jnp.array([0.2, 0.5, 0.3])


def _objective(losses, pref, lambda_):
    cosine = pref @ losses / (jnp.linalg.norm(pref) * jnp.linalg.norm(losses))
    return pref @ losses - lambda_ * cosine


@pytest.mark.parametrize("lambda_", [0.0, 0.5, 8.0])
def test_weights_are_the_gradient_of_the_objective(lambda_):
    expected = jax.grad(_objective)(LOSSES, PREF, lambda_)
    np.testing.assert_allclose(mtlx.cosmos_weights(LOSSES, PREF, lambda_), expected, rtol=1e-10)
    tx = mtlx.cosmos(PREF, lambda_)
    out, _ = jax.jit(tx.update)(jnp.eye(3), tx.init(None), None, task_losses=LOSSES)
    np.testing.assert_allclose(out, expected, rtol=1e-10)


def test_the_penalty_gradient_is_orthogonal_to_the_losses():
    w0, w = mtlx.cosmos_weights(LOSSES, PREF, 0.0), mtlx.cosmos_weights(LOSSES, PREF, 3.0)
    np.testing.assert_allclose(w0, PREF)  # lambda = 0: the linear scalarization
    np.testing.assert_allclose((w - w0) @ LOSSES, 0.0, atol=1e-12)


def test_zero_losses_give_finite_weights():
    assert np.all(np.isfinite(mtlx.cosmos_weights(jnp.zeros(3), PREF, 1.0)))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="lambda_"):
        mtlx.cosmos(PREF, -1.0)
    with pytest.raises(ValueError, match="pref_vector"):
        mtlx.cosmos(jnp.ones((2, 2)))
    tx = mtlx.cosmos(jnp.ones(2))
    with pytest.raises(ValueError, match="pref_vector"):
        tx.update(jnp.eye(3), tx.init(None), None, task_losses=LOSSES)


def test_a_zero_loss_vector_is_refused_outside_jit_and_finite_inside():
    tx = mtlx.cosmos(jnp.asarray([0.5, 0.5]))
    jac = jnp.eye(2)
    with pytest.raises(ValueError, match="loss vector is zero"):
        tx.update(jac, tx.init(jnp.zeros(2)), jnp.zeros(2), task_losses=jnp.zeros(2))
    out, _ = jax.jit(tx.update)(jac, tx.init(jnp.zeros(2)), jnp.zeros(2), task_losses=jnp.zeros(2))
    assert np.all(np.isfinite(np.asarray(out)))
    # lambda_ = 0 (the linear scalarization) has no cosine: zero losses are fine.
    plain = mtlx.cosmos(jnp.asarray([0.5, 0.5]), lambda_=0.0)
    np.testing.assert_allclose(
        plain.update(jac, plain.init(jnp.zeros(2)), jnp.zeros(2), task_losses=jnp.zeros(2))[0],
        [0.5, 0.5],
    )
