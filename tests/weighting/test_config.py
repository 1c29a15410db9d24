"""mtlx.config: the Gramian-space ConFIG equals the row-space formula."""

import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtlx
from tests import strategies

J_BASE = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
_WEIGHTS = jax.jit(mtlx.config_weights)


def _update(j, pref=None):
    pref = np.ones(j.shape[0]) if pref is None else pref
    return np.asarray(_WEIGHTS(jnp.asarray(j @ j.T), jnp.asarray(pref))) @ j


def _row_space_config(j, pref):
    """Equation 2 of the paper on the rows (TorchJD's implementation, in NumPy)."""
    units = j / np.linalg.norm(j, axis=1, keepdims=True)
    direction = np.linalg.pinv(units) @ pref
    unit = direction / np.linalg.norm(direction)
    return np.sum(j @ unit) * unit


def test_known_value():
    """TorchJD's ConFIG on J_BASE."""
    np.testing.assert_allclose(_update(J_BASE), [0.1588, 2.0706, 2.0706], atol=1e-4)


@hypothesis.given(j=strategies.jacobians(tasks=(2, 3, 5), params=(4, 9), full_rank=True))
def test_gramian_space_equals_row_space(j):
    pref = np.linspace(0.5, 1.5, j.shape[0])
    np.testing.assert_allclose(_update(j, pref), _row_space_config(j, pref), rtol=1e-6, atol=1e-9)


@hypothesis.given(j=strategies.jacobians(tasks=(2, 3, 5), params=(9,), full_rank=True))
def test_equal_projections_and_non_conflicting_for_independent_rows(j):
    out = _update(j)
    projections = (j / np.linalg.norm(j, axis=1, keepdims=True)) @ out
    np.testing.assert_allclose(projections, projections.mean(), rtol=1e-6)
    assert np.all(projections > 0)


def test_zero_rows_are_left_out_and_cancelling_rows_give_zero():
    j = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [2.0, -1.0, 0.5]])
    expected = _row_space_config(j[[0, 2]], np.ones(2))
    np.testing.assert_allclose(_update(j), expected, rtol=1e-9)
    np.testing.assert_allclose(_update(np.array([[1.0, 2.0], [-1.0, -2.0]])), 0.0, atol=1e-12)


def test_bad_preference_raises():
    with pytest.raises(ValueError, match="pref_vector"):
        mtlx.config(pref_vector=np.ones((2, 2)))
