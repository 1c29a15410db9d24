"""mtlx.mgda: the loss normalizations on losses outside (0, inf)."""

import jax.numpy as jnp
import numpy as np
import pytest

import mtlx


@pytest.mark.parametrize("normalization", ["loss", "loss+"])
def test_loss_normalizations_keep_the_direction_of_a_task_with_a_negative_loss(normalization):
    """Dividing by L_t < 0 would flip the task's row: MGDA then moves against that task."""
    jac = jnp.array([[1.0, 2.0, 0.0], [0.0, 1.0, -1.0]])
    params = jnp.zeros(3)
    tx = mtlx.mgda(normalization=normalization)
    negative, _ = tx.update(jac, tx.init(params), params, task_losses=jnp.array([-1.0, 1.0]))
    positive, _ = tx.update(jac, tx.init(params), params, task_losses=jnp.array([1.0, 1.0]))
    np.testing.assert_allclose(negative, positive, rtol=1e-6)
    assert np.all(jac @ negative >= -1e-6)  # non-conflicting, as without normalization
    zero, _ = tx.update(jac, tx.init(params), params, task_losses=jnp.array([0.0, 1.0]))
    assert np.all(np.isfinite(zero))
