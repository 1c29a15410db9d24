"""mtlx.dualproj: projection onto the dual cone of the rows."""

import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtlx
from tests import strategies

J_BASE = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
_WEIGHTS = jax.jit(mtlx.dualproj_weights)


def _update(j, pref=None):
    pref = np.full(j.shape[0], 1.0 / j.shape[0]) if pref is None else pref
    return np.asarray(_WEIGHTS(jnp.asarray(j @ j.T), jnp.asarray(pref))) @ j


def test_known_values():
    """TorchJD's DualProjWeighting on G_BASE and DualProj on J_BASE."""
    np.testing.assert_allclose(_WEIGHTS(jnp.asarray(J_BASE @ J_BASE.T)), [0.6109, 0.5], atol=1e-4)
    np.testing.assert_allclose(_update(J_BASE), [0.5563, 1.1109, 1.1109], atol=1e-4)


@hypothesis.given(j=strategies.jacobians(tasks=(2, 3, 5), nonnegative=True))
def test_without_conflict_is_the_preference_sum(j):
    """Non-negative rows never conflict, so the mean is already in the dual cone."""
    np.testing.assert_allclose(_update(j), j.mean(0), rtol=1e-6, atol=1e-9)


@hypothesis.given(j=strategies.jacobians(tasks=(2, 3, 5)))
def test_non_conflicting_with_a_preference_and_weights_above_it(j):
    pref = np.linspace(0.2, 1.0, j.shape[0])
    w = np.asarray(_WEIGHTS(jnp.asarray(j @ j.T), jnp.asarray(pref)))
    assert np.all(w >= pref - 1e-9)
    # The QP runs on G / trace(G) + reg_eps I (reg_eps = 1e-4, as TorchJD): <g_t, d> >= -reg w_t.
    tolerance = 1e-4 * np.trace(j @ j.T) * w.max() * 1.01 + 1e-12
    assert np.all(j @ (w @ j) >= -tolerance)


@hypothesis.given(j=strategies.jacobians(tasks=(3,), params=(4, 9), full_rank=True))
def test_is_the_euclidean_projection(j):
    """No point of the dual cone (sampled) is closer to the mean than the update."""
    out, mean = _update(j), j.mean(0)
    rng = np.random.default_rng(0)
    for _ in range(200):
        x = out + 0.1 * np.linalg.norm(out + 1e-12) * rng.standard_normal(out.shape)
        if np.all(j @ x >= 0):
            slack = 1e-3 * np.linalg.norm(mean)
            assert np.linalg.norm(x - mean) >= np.linalg.norm(out - mean) - slack


def test_bad_preference_raises():
    with pytest.raises(ValueError, match="pref_vector"):
        mtlx.dualproj(pref_vector=np.ones((2, 2)))
    tx = mtlx.dualproj(pref_vector=np.ones(3))
    with pytest.raises(ValueError, match="3 entries"):
        tx.update(jnp.asarray(J_BASE), tx.init(None))
