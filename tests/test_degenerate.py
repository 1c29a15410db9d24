"""Every method on degenerate input, inside jit: finite, the right shape and dtype, a clean state.

The families: zero rows, duplicate and opposite rows, rank one, row norms up to 1e8 apart, tiny
(1e-20) and huge (1e15) rows, losses from 1e-6 to 1e6 and zeros among them; float32 and float64.
One Jacobian shape per method, so each method compiles once and the examples are cheap:
``MTLX_DEGENERATE_EXAMPLES`` examples per method and dtype (200 by default).

Non-finite input goes through :func:`mtlx.skip_nonfinite`: the update is skipped, the state is the
previous one, and the skip is counted.
"""

import os

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtlx
from tests import methods_under_test

ENTRIES = methods_under_test.entries()
IDS = methods_under_test.ids()
EXAMPLES = int(os.environ.get("MTLX_DEGENERATE_EXAMPLES", "200"))
P = 4


def _num_tasks(entry):
    return max(3, entry["min_tasks"])


@st.composite
def degenerate_inputs(draw, num_tasks):
    """A ``(T, P)`` Jacobian from one degenerate family, and ``(T,)`` losses."""
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    j = rng.standard_normal((num_tasks, P))
    family = draw(
        st.sampled_from(
            ["plain", "zero_row", "all_zero", "duplicate", "opposite", "rank_one", "spread",
             "tiny", "huge"]
        )
    )  # fmt: skip
    if family == "zero_row":
        j[0] = 0.0
    elif family == "all_zero":
        j[:] = 0.0
    elif family == "duplicate":
        j[1:] = j[0]
    elif family == "opposite":
        j[1] = -j[0] * rng.uniform(0.1, 10.0)
    elif family == "rank_one":
        j = np.outer(rng.standard_normal(num_tasks), rng.standard_normal(P))
    elif family == "spread":
        j *= 10.0 ** rng.uniform(-4.0, 4.0, (num_tasks, 1))
    elif family == "tiny":
        j *= 1e-20
    elif family == "huge":
        j *= 1e15
    losses = 10.0 ** rng.uniform(-6.0, 6.0, num_tasks)
    if draw(st.booleans()):
        losses[rng.integers(num_tasks)] = 0.0
    return j, losses


def _floating(tree):
    return [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_finite_shape_and_dtype_on_degenerate_families(entry, dtype):
    num_tasks = _num_tasks(entry)
    tx, update = methods_under_test.make_jitted(entry["name"], num_tasks)
    params = jnp.zeros((P,), dtype)

    @hypothesis.settings(max_examples=EXAMPLES, deadline=None, derandomize=True)
    @hypothesis.given(inputs=degenerate_inputs(num_tasks))
    def check(inputs):
        j, losses = inputs
        state = tx.init(params)
        jac, task_losses = jnp.asarray(j, dtype), jnp.asarray(losses, dtype)
        for _ in range(2):  # a second step reads the state the first one wrote
            out, new_state = update(jac, state, params, task_losses=task_losses)
            chex.assert_shape(out, (P,))
            assert out.dtype == dtype, (entry["name"], out.dtype)
            chex.assert_tree_all_finite(out)
            chex.assert_tree_all_finite(_floating(new_state))
            chex.assert_trees_all_equal_shapes_and_dtypes(new_state, state)
            state = new_state

    check()


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_non_finite_input_is_skipped_and_counted(entry):
    num_tasks = _num_tasks(entry)
    inner = methods_under_test.make(entry, num_tasks)
    tx = mtlx.skip_nonfinite(inner, check_jacobian=True)
    update = jax.jit(tx.update)
    rng = np.random.default_rng(0)
    jac = jnp.asarray(rng.standard_normal((num_tasks, P)))
    losses = jnp.linspace(0.5, 2.0, num_tasks)
    state = tx.init(jnp.zeros(P))
    _, state = update(jac, state, None, task_losses=losses)
    for bad_jac, bad_losses in (
        (jac, losses.at[1].set(jnp.nan)),
        (jac.at[0, 2].set(jnp.inf), losses),
    ):
        out, skipped = update(bad_jac, state, None, task_losses=bad_losses)
        np.testing.assert_array_equal(out, 0.0)
        chex.assert_trees_all_equal(skipped.inner, state.inner)
        assert bool(skipped.last_skipped) and int(skipped.skipped) == int(state.skipped) + 1
        state = skipped
    out, state = update(jac, state, None, task_losses=losses)
    chex.assert_tree_all_finite(out)
    assert not bool(state.last_skipped) and int(state.skipped) == 2
