"""mtlx.aligned_mtl: the balance transformation whitens the task gradients."""

import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtlx
from tests import strategies

J_BASE = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
_WEIGHTS = jax.jit(mtlx.aligned_mtl_weights, static_argnames=("scale_mode",))


def test_known_values():
    """TorchJD's AlignedMTLWeighting on G_BASE and AlignedMTL on J_BASE."""
    w = np.asarray(_WEIGHTS(jnp.asarray(J_BASE @ J_BASE.T)))
    np.testing.assert_allclose(w, [0.5591, 0.4083], atol=1e-4)
    np.testing.assert_allclose(w @ J_BASE, [0.2133, 0.9673, 0.9673], atol=1e-4)


def _balance(g, scale_mode="min"):
    """B, column by column: the weights of the unit preferences."""
    eye = jnp.eye(g.shape[0])
    columns = [np.asarray(_WEIGHTS(g, e, scale_mode=scale_mode)) for e in eye]
    return np.stack(columns, 1)


@hypothesis.given(j=strategies.jacobians(tasks=(2, 3, 5), params=(9,), full_rank=True))
def test_aligned_gradients_are_orthogonal_with_equal_norms(j):
    """B G B = sigma I: the aligned rows (B J) have condition number one."""
    g = j @ j.T
    b = _balance(jnp.asarray(g))
    sigma = np.linalg.eigvalsh(g).min()
    expected = sigma * np.eye(len(g))
    np.testing.assert_allclose(b @ g @ b, expected, rtol=1e-6, atol=1e-8 * np.trace(g))


@hypothesis.given(j=strategies.jacobians(tasks=(3, 5), params=(9,), full_rank=True))
def test_scale_modes_only_rescale(j):
    g = j @ j.T
    eigenvalues = np.sort(np.linalg.eigvalsh(g))
    base = np.asarray(_WEIGHTS(jnp.asarray(g)))
    lower_median = eigenvalues[(len(eigenvalues) - 1) // 2]
    for mode, sigma in (("median", lower_median), ("rmse", eigenvalues.mean())):
        np.testing.assert_allclose(
            _WEIGHTS(jnp.asarray(g), scale_mode=mode),
            np.sqrt(sigma / eigenvalues[0]) * base,
            rtol=1e-6,
        )


def test_rank_deficient_uses_the_kept_eigenvalues():
    """Duplicate rows: rank 1, B = V_1 V_1^T (sigma = the kept eigenvalue); zero G: B = I."""
    j = np.array([[1.0, 2.0], [1.0, 2.0]])
    np.testing.assert_allclose(_WEIGHTS(jnp.asarray(j @ j.T)) @ j, [1.0, 2.0], rtol=1e-9)
    np.testing.assert_allclose(_WEIGHTS(jnp.zeros((2, 2))), [0.5, 0.5])


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="scale_mode"):
        mtlx.aligned_mtl(scale_mode="max")
    with pytest.raises(ValueError, match="pref_vector"):
        mtlx.aligned_mtl(pref_vector=np.ones((2, 2)))
