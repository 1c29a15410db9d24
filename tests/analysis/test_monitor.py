"""mtlx.conflict_monitor: an identity transform whose state counts per-layer conflicts."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtlx
from mtlx import analysis

THRESHOLDS = (0.0, -0.02, -0.05, -0.1)
T, STEPS = 3, 6


def _params():
    return {"a": {"kernel": jnp.zeros((4, 2)), "bias": jnp.zeros(2)}, "b": {"kernel": jnp.zeros(5)}}


def _jacobians(seed, steps=STEPS):
    rng = np.random.default_rng(seed)
    return {
        "a": {
            "kernel": rng.standard_normal((steps, T, 4, 2)),
            "bias": rng.standard_normal((steps, T, 2)),
        },
        "b": {"kernel": rng.standard_normal((steps, T, 5))},
    }


def _numpy_counts(jacs, layer_leaves, steps):
    counts = np.zeros(len(THRESHOLDS), np.int64)
    cos_sum = 0.0
    for k in steps:
        rows = np.concatenate([leaf[k].reshape(T, -1) for leaf in layer_leaves], axis=1)
        norms = np.linalg.norm(rows, axis=1)
        for s in range(T):
            for t in range(s + 1, T):
                cos = rows[s] @ rows[t] / (norms[s] * norms[t])
                counts += np.asarray([cos < th for th in THRESHOLDS])
                cos_sum += cos
    return counts, cos_sum


@functools.cache
def _scan_run(every):
    tx = analysis.conflict_monitor(THRESHOLDS, every=every)

    @jax.jit
    def run(jacs):
        def step(state, jac):
            out, state = tx.update(jac, state)
            return state, out

        return jax.lax.scan(step, tx.init(_params()), jacs)

    return run


@pytest.mark.parametrize("every", [1, 2])
def test_counts_over_a_scan_equal_numpy(every):
    jacs = jax.tree.map(jnp.asarray, _jacobians(every))
    state, outs = _scan_run(every)(jacs)
    chex.assert_trees_all_equal(outs, jacs)  # identity on the updates
    steps = range(0, STEPS, every)
    counts = analysis.layer_conflict_counts(state)
    assert set(counts) == {"a", "b"}
    a_ref, a_cos = _numpy_counts(jacs, [jacs["a"]["bias"], jacs["a"]["kernel"]], steps)
    b_ref, _ = _numpy_counts(jacs, [jacs["b"]["kernel"]], steps)
    np.testing.assert_array_equal(counts["a"], a_ref)
    np.testing.assert_array_equal(counts["b"], b_ref)
    assert int(state.steps) == len(steps) and int(state.count) == STEPS
    assert int(state.layer_observations["a"]) == len(steps) * T * (T - 1) // 2
    np.testing.assert_allclose(state.layer_cosine_sum["a"], a_cos, rtol=1e-5)
    summary = analysis.layer_conflict_summary(state)
    np.testing.assert_allclose(summary["a"]["mean_cosine"], a_cos / (len(steps) * 3), rtol=1e-5)


def test_in_a_chain_with_the_engine_jacobian_and_task_specific_heads():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((16, 4)))
    y = jnp.asarray(rng.standard_normal((16, T)))
    params = {
        "encoder": {"kernel": jnp.asarray(0.5 * rng.standard_normal((4, 8))), "bias": jnp.zeros(8)},
        "heads": {"kernel": jnp.asarray(0.5 * rng.standard_normal((T, 8)))},
    }

    def loss_fn(p, x, y):
        h = jnp.tanh(x @ p["encoder"]["kernel"] + p["encoder"]["bias"])
        return jnp.mean((h @ p["heads"]["kernel"].T - y) ** 2, axis=0)

    engine = mtlx.value_and_jacobian(
        loss_fn, shared=lambda path, leaf: "heads" not in jax.tree_util.keystr(path)
    )
    monitored = optax.chain(mtlx.conflict_monitor(THRESHOLDS), mtlx.pcgrad(), optax.adam(1e-2))
    plain = optax.chain(mtlx.pcgrad(), optax.adam(1e-2))

    @jax.jit
    def step(params, s_mon, s_plain):
        losses, jac = engine(params, x, y)
        u_mon, s_mon = monitored.update(jac, s_mon, params, task_losses=losses)
        u_plain, s_plain = plain.update(jac, s_plain, params, task_losses=losses)
        return optax.apply_updates(params, u_plain), s_mon, s_plain, u_mon, u_plain

    s_mon, s_plain = monitored.init(params), plain.init(params)
    for _ in range(3):
        params, s_mon, s_plain, u_mon, u_plain = step(params, s_mon, s_plain)
        chex.assert_trees_all_close(u_mon, u_plain, rtol=1e-6)  # the monitor changes nothing
    counts = mtlx.layer_conflict_counts(s_mon)  # finds the monitor inside the chain state
    assert list(counts) == ["encoder"]  # the heads are task-specific: no conflict statistics
    assert int(s_mon[0].layer_observations["heads"]) == 0
    assert int(s_mon[0].layer_observations["encoder"]) == 3 * T * (T - 1) // 2


def test_it_hands_the_rows_it_read_to_the_weighting_by_value():
    params = {"w": jnp.array([0.3, -0.2]), "b": jnp.array(0.1)}
    x = jnp.linspace(-1.0, 1.0, 8).reshape(4, 2)

    def loss_fn(p, x):
        h = x @ p["w"] + p["b"]
        return jnp.stack([jnp.mean(h**2), jnp.mean((h - 1) ** 2)])

    tx = analysis.conflict_monitor(THRESHOLDS)
    seen = []

    @jax.jit
    def step(params, state):
        _, jac = mtlx.value_and_jacobian(loss_fn)(params, x)
        out, state = tx.update(jac, state)
        seen.append(isinstance(out, mtlx.StackedJacobian))  # at trace time
        return state, out.rows(), jac.rows()

    _, handed_on, fresh = step(params, tx.init(params))
    chex.assert_trees_all_close(handed_on, fresh, rtol=1e-6)
    assert seen == [True]  # the next transform's Gramian reads these rows, not new ones


def test_vmap_over_independent_runs():
    tx = analysis.conflict_monitor(THRESHOLDS)
    jacs = jax.tree.map(lambda x: jnp.asarray(x[:4]), _jacobians(5))  # 4 runs, one step each
    states = jax.vmap(tx.init)(jax.tree.map(lambda x: jnp.zeros((4, *x.shape)), _params()))
    _, states = jax.jit(jax.vmap(tx.update))(jacs, states)
    chex.assert_shape(states.layer_counts["a"], (4, len(THRESHOLDS)))


def test_one_task_counts_nothing_and_bad_arguments_raise():
    tx = analysis.conflict_monitor(THRESHOLDS)
    jac = {"w": jnp.ones((1, 3))}
    _, state = tx.update(jac, tx.init({"w": jnp.zeros(3)}))
    assert int(state.layer_observations["w"]) == 0
    np.testing.assert_array_equal(state.counts, 0)
    with pytest.raises(ValueError, match="parameters"):
        tx.init(None)
    with pytest.raises(ValueError, match="every"):
        analysis.conflict_monitor(every=0)
    with pytest.raises(ValueError, match="thresholds"):
        analysis.conflict_monitor(thresholds=(2.0,))
    with pytest.raises(ValueError, match="layers"):
        tx.update({"v": jnp.ones((2, 3))}, tx.init({"w": jnp.zeros(3)}))
    with pytest.raises(ValueError, match="ConflictMonitorState"):
        analysis.layer_conflict_counts((optax.EmptyState(),))
