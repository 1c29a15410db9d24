"""The contract every weighting method keeps (the public protocol), over METHODS_UNDER_TEST."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtlx
from tests import methods_under_test, strategies

ENTRIES = methods_under_test.entries()
IDS = methods_under_test.ids()
J_BASE = jnp.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
# For methods that need more tasks (Krum): TorchJD's J_Krum.
J_FIVE = jnp.array(
    [[1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [75.0, -666.0, 23], [1.0, 2.0, 3.0], [2.0, 0.0, 1.0]]
)


def _base(entry):
    """A small (T, 3) Jacobian valid for the method, and its T."""
    j = J_BASE if entry["min_tasks"] <= 2 else J_FIVE
    return j, j.shape[0]


def _require_tasks(entry, num_tasks):
    if num_tasks < entry["min_tasks"]:
        pytest.skip(f"{entry['name']} needs at least {entry['min_tasks']} tasks")


def _losses(num_tasks):
    return jnp.linspace(0.5, 2.0, num_tasks)


def _apply(entry, jac, num_tasks, *, jit=True, **extra):
    tx, jitted = methods_under_test.make_jitted(entry["name"], num_tasks)
    update = jitted if jit else tx.update
    state = tx.init(jax.tree.map(lambda x: jnp.zeros(jnp.shape(x)[1:]), jac))  # params-shaped
    return update(jac, state, None, task_losses=_losses(num_tasks), **extra)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
class TestContract:
    def test_jit_equals_no_jit(self, entry):
        j, t = _base(entry)
        out_jit, state_jit = _apply(entry, j, t, jit=True)
        out, state = _apply(entry, j, t, jit=False)
        chex.assert_shape(out, (3,))
        chex.assert_trees_all_close(out_jit, out, rtol=1e-6, atol=1e-6)
        chex.assert_trees_all_equal_shapes_and_dtypes(state_jit, state)

    def test_second_update_does_not_retrace(self, entry):
        chex.clear_trace_counter()  # methods built by one builder share update_fn's code object
        j, t = _base(entry)
        tx = methods_under_test.make(entry, t)
        update = jax.jit(chex.assert_max_traces(tx.update, n=1))
        state = tx.init(jnp.zeros(3))
        for _ in range(3):
            out, state = update(j, state, None, task_losses=_losses(t))
        chex.assert_tree_all_finite(out)

    def test_unknown_extra_args_are_ignored(self, entry):
        j, t = _base(entry)
        out, _ = _apply(entry, j, t, jit=False, some_future_arg=jnp.ones(4))
        chex.assert_trees_all_close(out, _apply(entry, j, t, jit=False)[0])

    def test_task_axis_that_does_not_match_the_losses_raises(self, entry):
        j, t = _base(entry)
        tx = methods_under_test.make(entry, t)
        with pytest.raises(ValueError, match="task"):
            tx.update(j, tx.init(jnp.zeros(3)), None, task_losses=jnp.ones(t + 1))

    def test_non_finite_losses_raise_outside_jit(self, entry):
        j, t = _base(entry)
        tx = methods_under_test.make(entry, t)
        losses = _losses(t).at[-1].set(jnp.nan)
        with pytest.raises(ValueError, match="non-finite"):
            tx.update(j, tx.init(jnp.zeros(3)), None, task_losses=losses)

    def test_a_non_finite_loss_inside_jit_never_poisons_the_state(self, entry):
        # The state skips a step whose losses are not all finite (its update is NaN, as the
        # loss); the next steps are what they would have been without it.
        j, t = _base(entry)
        tx = methods_under_test.make(entry, t)
        update = jax.jit(tx.update)
        state = tx.init(jnp.zeros(3))
        _, state = update(j, state, None, task_losses=_losses(t))
        _, skipped = update(j, state, None, task_losses=_losses(t).at[0].set(jnp.nan))
        floating = [x for x in jax.tree.leaves(skipped) if jnp.issubdtype(x.dtype, jnp.floating)]
        chex.assert_tree_all_finite(floating)
        if entry["needs_losses"]:  # a state that follows the losses skipped the step
            chex.assert_trees_all_equal(skipped, state)
        out, _ = update(j, skipped, None, task_losses=_losses(t))
        chex.assert_tree_all_finite(out)

    def test_mismatched_leading_axes_raise(self, entry):
        _, t = _base(entry)
        tx = methods_under_test.make(entry, t)
        bad = {"a": jnp.ones((t, 3)), "b": jnp.ones((t + 1, 3))}
        with pytest.raises(ValueError, match="number of tasks"):
            tx.update(bad, tx.init(bad), None, task_losses=_losses(2))

    @pytest.mark.parametrize(
        "case", ["zero_rows", "duplicate_rows", "one_task", "rank_one", "tiny"]
    )
    def test_finite_on_degenerate_input(self, entry, case):
        rng = np.random.default_rng(0)
        j = {
            "zero_rows": np.zeros((3, 4)),
            "duplicate_rows": np.repeat(rng.standard_normal((1, 4)), 3, axis=0),
            "one_task": rng.standard_normal((1, 4)),
            "rank_one": np.outer([1.0, -2.0, 0.5], rng.standard_normal(4)),
            "tiny": 1e-20 * rng.standard_normal((3, 4)),
        }[case]
        _require_tasks(entry, j.shape[0])
        out, state = _apply(entry, jnp.asarray(j), j.shape[0])
        chex.assert_shape(out, (4,))
        chex.assert_tree_all_finite(out)
        floating = [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
        chex.assert_tree_all_finite(floating)

    def test_pytree_equals_flat(self, entry):
        if not entry["layout_invariant"]:
            pytest.skip(f"{entry['name']} draws per coordinate: pytree == flat in law only")
        _require_tasks(entry, 3)
        j = strategies.random_jacobian(np.random.default_rng(1), 3, 8)
        flat, _ = _apply(entry, jnp.asarray(j), 3)
        tree, _ = _apply(entry, jax.tree.map(jnp.asarray, strategies.as_pytree(j)), 3)
        np.testing.assert_allclose(strategies.flatten_pytree(tree), flat, rtol=1e-6, atol=1e-9)

    @pytest.mark.parametrize("chunk_size", [None, 2])
    def test_engine_jacobian_gives_the_same_update_as_its_rows(self, entry, chunk_size):
        _require_tasks(entry, 3)
        x = jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)
        params = {
            "w": jnp.array([[0.3, -0.2], [0.1, 0.4], [-0.5, 0.2]]),
            "b": jnp.array([0.1, -0.1]),
        }

        def loss_fn(p, x):
            h = jnp.tanh(x @ p["w"] + p["b"])
            # losses >= 0: GLS and FAMO take logs
            return jnp.stack(
                [
                    jnp.mean(h[:, 0] ** 2),
                    jnp.mean((h[:, 1] - 1) ** 2),
                    jnp.mean(h[:, 0] * h[:, 1]) ** 2,
                ]
            )

        losses, jac = mtlx.value_and_jacobian(loss_fn, chunk_size=chunk_size)(params, x)
        rows = jax.jacrev(loss_fn)(params, x)
        tx = methods_under_test.make(entry, 3)
        out_engine, _ = jax.jit(tx.update)(jac, tx.init(params), params, task_losses=losses)
        out_rows, _ = tx.update(rows, tx.init(params), params, task_losses=losses)
        chex.assert_trees_all_close(out_engine, out_rows, rtol=1e-6, atol=1e-10)

    def test_state_survives_flatten_and_scan(self, entry):
        j, t = _base(entry)
        tx = methods_under_test.make(entry, t)
        state = tx.init(jnp.zeros(3))
        leaves, treedef = jax.tree.flatten(state)
        state = jax.tree.unflatten(treedef, leaves)

        def step(state, scale):
            out, state = tx.update(scale * j, state, None, task_losses=scale * _losses(t))
            return state, out

        _, outs = jax.lax.scan(step, state, jnp.array([1.0, 0.5, 2.0]))
        chex.assert_shape(outs, (3, 3))
        chex.assert_tree_all_finite(outs)

    def test_chain_with_adam_trains_a_three_task_model(self, entry):
        _require_tasks(entry, 3)
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.standard_normal((64, 5)))
        targets = jnp.asarray(np.stack([x[:, 0] - x[:, 1], x[:, 2] * 0.5, x[:, 3] + x[:, 4]], 1))
        params = {
            "encoder": {"w": jnp.asarray(0.3 * rng.standard_normal((5, 16))), "b": jnp.zeros(16)},
            "heads": jnp.asarray(0.3 * rng.standard_normal((3, 16))),
        }

        def loss_fn(p, x, y):
            h = jnp.tanh(x @ p["encoder"]["w"] + p["encoder"]["b"])
            return jnp.mean((h @ p["heads"].T - y) ** 2, axis=0)

        engine = mtlx.value_and_jacobian(
            loss_fn, shared=lambda path, leaf: "heads" not in jax.tree_util.keystr(path)
        )
        tx = optax.chain(methods_under_test.make(entry, 3), optax.adam(1e-2))

        @jax.jit
        def step(params, state):
            losses, jac = engine(params, x, targets)
            updates, state = tx.update(jac, state, params, task_losses=losses)
            return optax.apply_updates(params, updates), state, losses

        state = tx.init(params)
        first = None
        for _ in range(150):
            params, state, losses = step(params, state)
            first = losses if first is None else first
        assert float(losses.sum()) < 0.5 * float(first.sum()), (first, losses)
