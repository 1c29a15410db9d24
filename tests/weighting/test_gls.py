"""mtlx.gls: geometric loss strategy (Chennupati et al., CVPRW 2019)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtlx


def _update(jac, losses):
    tx = mtlx.gls()
    return jax.jit(tx.update)(jac, tx.init(None), None, task_losses=losses)[0]


def test_known_value():
    # geometric mean of [1, 4] is 2: w = 2 / (2 [1, 4])
    np.testing.assert_allclose(mtlx.gls_weights(jnp.array([1.0, 4.0])), [1.0, 0.25], rtol=1e-12)


def test_is_the_gradient_of_the_geometric_mean():
    rng = np.random.default_rng(0)
    losses = jnp.asarray(rng.uniform(0.1, 5.0, 5))
    expected = jax.grad(lambda l: jnp.prod(l) ** (1 / 5))(losses)
    np.testing.assert_allclose(mtlx.gls_weights(losses), expected, rtol=1e-10)
    jac = jnp.asarray(rng.standard_normal((5, 4)))
    np.testing.assert_allclose(_update(jac, losses), expected @ jac, rtol=1e-10)


@pytest.mark.parametrize("scale", [1e-200, 1e200])
def test_log_space_does_not_under_or_overflow(scale):
    losses = scale * jnp.array([1.0, 2.0, 4.0])  # the product under- or overflows in float64
    w = mtlx.gls_weights(losses)
    np.testing.assert_allclose(w, [2 / 3, 1 / 3, 1 / 6], rtol=1e-10)  # scale-free


def test_per_task_loss_scales_only_rescale_the_update():
    losses, scales = jnp.array([0.5, 2.0, 3.0]), jnp.array([10.0, 0.1, 8.0])
    factor = jnp.prod(scales) ** (1 / 3)
    # L_t -> c_t L_t (and its gradient -> c_t g_t): the update is multiplied by prod(c)^(1/3)
    jac = jnp.asarray(np.random.default_rng(1).standard_normal((3, 4)))
    np.testing.assert_allclose(
        _update(scales[:, None] * jac, scales * losses), factor * _update(jac, losses), rtol=1e-10
    )


def test_zero_loss_gives_zero_finite_weights():
    w = mtlx.gls_weights(jnp.array([0.0, 1.0, 2.0]))
    chex.assert_tree_all_finite(w)
    np.testing.assert_array_equal(w, 0.0)


def test_negative_loss_raises_outside_jit():
    tx = mtlx.gls()
    with pytest.raises(ValueError, match="non-negative"):
        tx.update(jnp.eye(2), tx.init(None), None, task_losses=jnp.array([1.0, -0.5]))
