"""mtlx.skip_nonfinite: a non-finite step is a no-op on the update and on every state."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtlx

JAC = jnp.array([[1.0, 2.0, 0.0, 0.5], [0.0, 1.0, -1.0, 0.3], [0.5, -0.2, 0.1, 1.0]])
PARAMS = jnp.zeros(4)
METHODS = {
    "ew": lambda: mtlx.ew(),
    "dwa": lambda: mtlx.dwa(num_tasks=3),
    "uw": lambda: mtlx.uw(num_tasks=3),
    "famo": lambda: mtlx.famo(num_tasks=3),
    "pcgrad": lambda: mtlx.pcgrad(seed=0),
    "upgrad": lambda: mtlx.upgrad(),
    "mgda": lambda: mtlx.mgda(),
    "nash_mtl": lambda: mtlx.nash_mtl(num_tasks=3),
    "graddrop": lambda: mtlx.graddrop(seed=0),
    "db_mtl": lambda: mtlx.db_mtl(num_tasks=3),
}


def _run(tx, losses_per_step):
    step = jax.jit(lambda s, losses: tx.update(JAC, s, PARAMS, task_losses=losses))
    state, updates = tx.init(PARAMS), []
    for losses in losses_per_step:
        u, state = step(state, jnp.asarray(losses, jnp.float32))
        updates.append(np.asarray(u))
    return updates, state


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_nan_loss_step_is_a_no_op(name):
    clean = [[1.0, 2.0, 0.5], [0.9, 1.5, 0.4], [0.8, 1.2, 0.3]]
    with_nan = [clean[0], [np.nan, 1.5, 0.4], clean[1], clean[2]]
    tx = mtlx.skip_nonfinite(optax.chain(METHODS[name](), optax.adam(1e-2)))
    reference, ref_state = _run(tx, clean)
    guarded, state = _run(tx, with_nan)
    np.testing.assert_array_equal(guarded[1], 0.0)  # the skipped step moves nothing
    for a, b in zip([guarded[0], *guarded[2:]], reference):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)  # as if the step never happened
    assert int(state.skipped) == 1 and int(ref_state.skipped) == 0
    assert not bool(state.last_skipped)
    for leaf in jax.tree.leaves(state.inner):
        if jnp.issubdtype(leaf.dtype, jnp.inexact):
            assert np.all(np.isfinite(leaf)), name


def test_a_nan_jacobian_row_that_a_method_drops_needs_check_jacobian():
    bad = JAC.at[1, 2].set(jnp.nan)
    losses = jnp.ones(3)
    for check, expect_skip in ((False, False), (True, True)):
        tx = mtlx.skip_nonfinite(mtlx.trimmed_mean(trim_number=1), check_jacobian=check)
        update, state = jax.jit(lambda s, tx=tx: tx.update(bad, s, PARAMS, task_losses=losses))(
            tx.init(PARAMS)
        )
        assert bool(state.last_skipped) is expect_skip
        assert np.all(np.isfinite(update))
    # A method whose update the NaN reaches is caught without the extra check.
    tx = mtlx.skip_nonfinite(mtlx.upgrad())
    update, state = tx.update(bad, tx.init(PARAMS), PARAMS, task_losses=losses)
    assert int(state.skipped) == 1 and np.all(update == 0.0)
