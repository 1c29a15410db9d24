"""mtlx.excess_mtl: the update equations in NumPy, warmup, state, task-specific leaves."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtlx
from tests import strategies


def _numpy_excess_mtl(jacs, robust_step_size=1.0, n_warmup_steps=0):
    """TorchJD 0.18's ExcessMTLWeighting.forward, step by step, in NumPy."""
    t = jacs[0].shape[0]
    weights, sq_sum, baseline, warmup_sum = np.full(t, 1.0 / t), np.zeros_like(jacs[0]), None, 0.0
    outs = []
    for step, j in enumerate(jacs):
        sq_sum = sq_sum + j**2
        excess = (j**2 / np.sqrt(sq_sum + 1e-7)).sum(1)
        if step < n_warmup_steps:
            warmup_sum = warmup_sum + excess
        else:
            if baseline is None and n_warmup_steps:
                baseline = warmup_sum / n_warmup_steps
                excess = excess / (baseline + 1e-7)
            elif baseline is None:
                baseline = excess
            else:
                excess = excess / (baseline + 1e-7)
            logits = np.log(weights) + robust_step_size * excess
            weights = np.exp(logits - logits.max())
            weights = weights / weights.sum()
        outs.append((weights.copy(), weights @ j))
    return outs


@functools.cache
def _transform(num_tasks, robust_step_size=1.0, n_warmup_steps=0):
    tx = mtlx.excess_mtl(num_tasks, robust_step_size, n_warmup_steps)
    return tx, jax.jit(tx.update)


def _run(jacs, **kwargs):
    tx, update = _transform(jacs[0].shape[0], **kwargs)
    state = tx.init(jnp.zeros(jacs[0].shape[1:]))
    outs = []
    for j in jacs:
        out, state = update(jnp.asarray(j), state)
        outs.append((np.asarray(state.weights), np.asarray(out)))
    return outs, state


def _sequence(num_tasks, num_params=6, steps=5, seed=0):
    rng = np.random.default_rng(seed)
    return [
        strategies.random_jacobian(rng, num_tasks, num_params, norm_spread=1.0)
        for _ in range(steps)
    ]


@pytest.mark.parametrize("n_warmup_steps", [0, 2])
@pytest.mark.parametrize("robust_step_size", [1.0, 0.1])
def test_matches_the_update_equations(robust_step_size, n_warmup_steps):
    jacs = _sequence(3)
    ours, _ = _run(jacs, robust_step_size=robust_step_size, n_warmup_steps=n_warmup_steps)
    reference = _numpy_excess_mtl(jacs, robust_step_size, n_warmup_steps)
    for (w, out), (w_ref, out_ref) in zip(ours, reference):
        np.testing.assert_allclose(w, w_ref, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(out, out_ref, rtol=1e-10, atol=1e-12)


def test_warmup_keeps_uniform_weights_and_sets_the_baseline():
    jacs = _sequence(3, steps=3, seed=1)
    outs, state = _run(jacs, n_warmup_steps=2)
    for w, out in outs[:2]:
        np.testing.assert_allclose(w, np.full(3, 1 / 3))
    sq_sum = jacs[0] ** 2 + jacs[1] ** 2
    expected = (jacs[0] ** 2 / np.sqrt(jacs[0] ** 2 + 1e-7)).sum(1)
    expected += (jacs[1] ** 2 / np.sqrt(sq_sum + 1e-7)).sum(1)
    np.testing.assert_allclose(state.baseline, expected / 2, rtol=1e-12)
    assert int(state.count) == 3


def test_weights_stay_on_the_simplex():
    outs, state = _run(_sequence(5, steps=6, seed=2))
    for w, _ in outs:
        assert np.all(w >= 0)
        np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-12)
    chex.assert_tree_all_finite(state)


@pytest.mark.parametrize(
    "case", ["zero_rows", "duplicate_rows", "one_task", "tiny", "huge_then_zero"]
)
def test_finite_on_degenerate_input(case):
    rng = np.random.default_rng(0)
    j = {
        "zero_rows": np.zeros((3, 4)),
        "duplicate_rows": np.repeat(rng.standard_normal((1, 4)), 3, axis=0),
        "one_task": rng.standard_normal((1, 4)),
        "tiny": 1e-20 * rng.standard_normal((3, 4)),
        "huge_then_zero": 1e6 * rng.standard_normal((3, 4)),
    }[case]
    jacs = [j, j, np.zeros_like(j) if case == "huge_then_zero" else j]
    outs, state = _run(jacs)
    for w, out in outs:
        chex.assert_tree_all_finite((w, out))
    floating = [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
    chex.assert_tree_all_finite(floating)


def test_pytree_equals_flat():
    j = strategies.random_jacobian(np.random.default_rng(3), 3, 8)
    tx, update = _transform(3)
    flat, flat_state = update(jnp.asarray(j), tx.init(jnp.zeros(8)))
    tree_j = jax.tree.map(jnp.asarray, strategies.as_pytree(j))
    params = jax.tree.map(lambda x: jnp.zeros(x.shape[1:]), tree_j)
    tree, tree_state = update(tree_j, tx.init(params))
    np.testing.assert_allclose(strategies.flatten_pytree(tree), flat, rtol=1e-12)
    np.testing.assert_allclose(tree_state.weights, flat_state.weights, rtol=1e-12)


def test_task_specific_leaves_get_their_own_gradient_and_no_statistics():
    rng = np.random.default_rng(4)
    shared = strategies.random_jacobian(rng, 2, 5)
    heads = np.zeros((2, 2, 3))  # leaf t of the heads belongs to task t
    heads[0, 0], heads[1, 1] = rng.standard_normal(3), rng.standard_normal(3)
    jac = mtlx.as_jacobian({"shared": jnp.asarray(shared), "heads": jnp.asarray(heads)})
    jac = type(jac)(jac.rows(), shared_mask=(False, True))  # leaves are sorted: heads, shared
    tx = mtlx.excess_mtl(2)
    out, state = tx.update(jac, tx.init({"shared": jnp.zeros(5), "heads": jnp.zeros((2, 3))}))
    ref_out, ref_state = _transform(2)[1](jnp.asarray(shared), _transform(2)[0].init(jnp.zeros(5)))
    np.testing.assert_allclose(out["shared"], ref_out, rtol=1e-12)
    np.testing.assert_allclose(out["heads"], heads.sum(0), rtol=1e-12)
    np.testing.assert_array_equal(state.sq_grad_sum["heads"], 0.0)
    np.testing.assert_allclose(state.weights, ref_state.weights, rtol=1e-12)


def test_state_survives_scan():
    jacs = _sequence(3, steps=4, seed=5)
    tx, _ = _transform(3)

    def step(state, j):
        out, state = tx.update(j, state)
        return state, out

    scan = jax.jit(lambda s, js: jax.lax.scan(step, s, js))
    final, outs = scan(tx.init(jnp.zeros(6)), jnp.asarray(np.stack(jacs)))
    looped, state = _run(jacs)
    np.testing.assert_allclose(outs, np.stack([o for _, o in looped]), rtol=1e-12)
    chex.assert_trees_all_close(final, state)


def test_errors():
    with pytest.raises(ValueError, match="learning_rate"):
        mtlx.excess_mtl(2, learning_rate=0.0)
    with pytest.raises(ValueError, match="n_warmup_steps"):
        mtlx.excess_mtl(2, n_warmup_steps=-1)
    with pytest.raises(ValueError, match="num_tasks"):
        mtlx.excess_mtl(0)
    tx = mtlx.excess_mtl(2)
    with pytest.raises(ValueError, match="init"):
        tx.init(None)
    with pytest.raises(ValueError, match="tasks"):
        tx.update(jnp.ones((3, 4)), tx.init(jnp.zeros(4)))
    with pytest.raises(ValueError, match="init"):
        tx.update(jnp.ones((2, 4)), tx.init(jnp.zeros(3)))
