"""mtlx.imtl_g: equal projections on the unit gradients, singular cases, scale-freeness."""

import hypothesis
import jax
import jax.numpy as jnp
import numpy as np

import mtlx
from tests import strategies

J_BASE = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
_WEIGHTS = jax.jit(mtlx.imtl_g_weights)


def _update(j):
    return np.asarray(_WEIGHTS(jnp.asarray(j @ j.T))) @ j


def test_known_values():
    """TorchJD's IMTLGWeighting on G_BASE and IMTLG on J_BASE."""
    weights = _WEIGHTS(jnp.asarray(J_BASE @ J_BASE.T))
    np.testing.assert_allclose(weights, [0.5923, 0.4077], atol=1e-4)
    np.testing.assert_allclose(_update(J_BASE), [0.0767, 1.0, 1.0], atol=1e-4)


@hypothesis.given(j=strategies.jacobians(tasks=(2, 3, 5), params=(9,), full_rank=True))
def test_equal_projections_on_unit_gradients(j):
    """Linearly independent rows: <update, g_t / ||g_t||> is the same for every task."""
    out = _update(j)
    projections = (j / np.linalg.norm(j, axis=1, keepdims=True)) @ out
    np.testing.assert_allclose(projections, projections.mean(), rtol=1e-6, atol=1e-9)


@hypothesis.given(j=strategies.jacobians(tasks=(2, 3, 5), params=(9,), full_rank=True))
def test_weights_sum_to_one_and_match_the_paper_closed_form(j):
    """IMTL-G's own formula: w = d^T G^{-1} / (1^T G^{-1} d), here with an explicit inverse."""
    g = j @ j.T
    v = np.linalg.solve(g, np.sqrt(np.diag(g)))
    hypothesis.assume(abs(v.sum()) * np.sqrt(np.trace(g)) > 1e-6)
    w = np.asarray(_WEIGHTS(jnp.asarray(g)))
    np.testing.assert_allclose(w, v / v.sum(), rtol=1e-6, atol=1e-9)


def test_zero_and_duplicate_rows_are_finite():
    j = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    out = _update(j)
    np.testing.assert_allclose(out, [1.0, 2.0, 3.0], rtol=1e-9)  # both copies projected equally
    np.testing.assert_array_equal(_update(np.zeros((3, 4))), np.zeros(4))


def test_weights_do_not_depend_on_the_scale():
    """TorchJD zeroes the update above norms ~1e12 (an absolute threshold); ours is scale-free."""
    j = strategies.random_jacobian(np.random.default_rng(0), 3, 5)
    w = np.asarray(_WEIGHTS(jnp.asarray(j @ j.T)))
    for c in (1e-8, 1e14):
        np.testing.assert_allclose(_WEIGHTS(jnp.asarray(c**2 * (j @ j.T))), w, rtol=1e-6)
