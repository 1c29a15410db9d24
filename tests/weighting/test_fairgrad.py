"""mtlx.fairgrad: the Newton root of G w = w^(-1/alpha) and its scaling law."""

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtlx
from tests import strategies

J_BASE = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
_WEIGHTS = jax.jit(mtlx.fairgrad_weights)  # alpha traced: one compile per shape


def test_value_on_j_base():
    """TorchJD 0.18's FairGrad(alpha=1) gives [0.0766, 0.9985, 0.9985] (not in its value table)."""
    w = np.asarray(_WEIGHTS(jnp.asarray(J_BASE @ J_BASE.T), 1.0))
    np.testing.assert_allclose(w, [0.5915, 0.4071], atol=1e-4)
    np.testing.assert_allclose(w @ J_BASE, [0.0766, 0.9985, 0.9985], atol=1e-4)


@hypothesis.given(
    j=strategies.jacobians(tasks=(2, 3, 5), params=(9,), full_rank=True),
    alpha=st.sampled_from([0.5, 1.0, 2.0, 5.0]),
)
def test_solves_the_fairness_equation(j, alpha):
    """G w = w^(-1/alpha), w > 0: every task's utility <g_t, d> is w_t^(-1/alpha) > 0."""
    g = j @ j.T
    w = np.asarray(_WEIGHTS(jnp.asarray(g), alpha))
    assert np.all(w > 0)
    np.testing.assert_allclose(g @ w, w ** (-1.0 / alpha), rtol=1e-7)


@hypothesis.given(
    j=strategies.jacobians(tasks=(3,), params=(9,), full_rank=True),
    alpha=st.sampled_from([0.5, 1.0, 2.0]),
    c=st.sampled_from([1e-3, 10.0, 1e4]),
)
def test_scaling_law(j, alpha, c):
    """Rows scaled by c: the weights scale by c^(-2 alpha / (1 + alpha)) (the update is scale-free
    at alpha = 1)."""
    g = j @ j.T
    w = np.asarray(_WEIGHTS(jnp.asarray(g), alpha))
    w_c = np.asarray(_WEIGHTS(jnp.asarray(c**2 * g), alpha))
    np.testing.assert_allclose(w_c, c ** (-2 * alpha / (1 + alpha)) * w, rtol=1e-6)


def test_alpha_zero_is_the_mean_and_degenerate_rows_are_finite():
    np.testing.assert_allclose(_WEIGHTS(jnp.asarray(J_BASE @ J_BASE.T), 0.0), [0.5, 0.5])
    j = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [2.0, -1.0, 0.5]])
    w = np.asarray(_WEIGHTS(jnp.asarray(j @ j.T), 1.0))
    assert w[1] == 0.0  # a zero row gets no weight (its root would be infinite)
    np.testing.assert_allclose(w[[0, 2]], _WEIGHTS(jnp.asarray(j[[0, 2]] @ j[[0, 2]].T), 1.0))
    cancelling = np.array([[1.0, 2.0], [-1.0, -2.0]])  # no positive root: a near-zero update
    out = np.asarray(_WEIGHTS(jnp.asarray(cancelling @ cancelling.T), 1.0)) @ cancelling
    assert np.all(np.isfinite(out)) and np.linalg.norm(out) < 1e-6


def test_negative_alpha_raises():
    with pytest.raises(ValueError, match="alpha"):
        mtlx.fairgrad(alpha=-1.0)
