"""mtlx.pbi: penalty-based boundary intersection (Zhang & Li, IEEE TEVC 2007)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtlx

LOSSES = jnp.array([0.5, 2.0, 1.0])
PREF = jnp.array([0.2, 0.5, 0.3])


def _objective(losses, pref, theta, reference):
    f = losses - reference
    u = pref / jnp.linalg.norm(pref)
    d1 = f @ u
    return d1 + theta * jnp.linalg.norm(f - d1 * u)


@pytest.mark.parametrize("theta", [0.0, 5.0])
def test_weights_are_the_gradient_of_the_objective(theta):
    reference = jnp.array([0.1, 0.0, 0.2])
    expected = jax.grad(_objective)(LOSSES, PREF, theta, reference)
    w = mtlx.pbi_weights(LOSSES, PREF, theta, reference)
    np.testing.assert_allclose(w, expected, rtol=1e-9)
    tx = mtlx.pbi(PREF, theta, reference)
    out, _ = jax.jit(tx.update)(jnp.eye(3), tx.init(None), None, task_losses=LOSSES)
    np.testing.assert_allclose(out, expected, rtol=1e-9)


def test_on_the_preference_direction_the_weights_are_the_unit_preference():
    w = mtlx.pbi_weights(3.0 * PREF, PREF, 5.0)
    np.testing.assert_allclose(w, PREF / jnp.linalg.norm(PREF), atol=1e-5)
    assert np.all(np.isfinite(mtlx.pbi_weights(jnp.array([2.0]), jnp.array([1.0]), 5.0)))


def test_invariant_to_the_scale_of_the_preference():
    np.testing.assert_allclose(
        mtlx.pbi_weights(LOSSES, 7.0 * PREF), mtlx.pbi_weights(LOSSES, PREF), rtol=1e-12
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(pref_vector=jnp.zeros(3)), "pref_vector"),
        (dict(pref_vector=jnp.array([1.0, -1.0])), "pref_vector"),
        (dict(pref_vector=PREF, theta=-1.0), "theta"),
    ],
)
def test_bad_hyperparameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mtlx.pbi(**kwargs)


def test_preference_of_the_wrong_length_raises():
    tx = mtlx.pbi(jnp.ones(2))
    with pytest.raises(ValueError, match="pref_vector"):
        tx.update(jnp.eye(3), tx.init(None), None, task_losses=LOSSES)
