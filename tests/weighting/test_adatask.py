"""mtlx.adatask / mtlx.scale_by_adatask: AdaTask (Yang et al., AAAI 2023), per-task Adam moments.

The reference is a NumPy transcription of the authors' ``Adam_with_AdaTask.step`` (one Adam state
per task on every shared parameter, ``p -= lr / bc1 * m_t / (sqrt(v_t) / sqrt(bc2) + eps)`` for
each task in turn; task-specific parameters: one Adam on the summed gradient).
"""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtlx

LR = 1e-2
B1, B2, EPS = 0.9, 0.999, 1e-8
STEPS = 5


def _params(num_tasks, rng):
    return {
        "trunk": {
            "w": jnp.asarray(rng.standard_normal((4, 3))),
            "b": jnp.asarray(rng.standard_normal((3,))),
        },
        "heads": jnp.asarray(rng.standard_normal((num_tasks, 3))),  # slice t: task t's head
    }


SHARED = {"trunk": {"w": True, "b": True}, "heads": False}


def _jacobians(num_tasks, rng, steps=STEPS):
    """Random Jacobians whose head rows are task t's only in slice t (task-specific)."""
    jacs = []
    for _ in range(steps):
        scales = 10.0 ** rng.uniform(-2, 2, size=num_tasks)  # tasks of very different scales
        heads = np.zeros((num_tasks, num_tasks, 3))
        for t in range(num_tasks):
            heads[t, t] = rng.standard_normal(3) * scales[t]
        jacs.append(
            {
                "trunk": {
                    "w": rng.standard_normal((num_tasks, 4, 3)) * scales[:, None, None],
                    "b": rng.standard_normal((num_tasks, 3)) * scales[:, None],
                },
                "heads": heads,
            }
        )
    return jacs


def _reference(params, jacs, shared, lr=LR, betas=(B1, B2), eps=EPS):
    """The authors' ``Adam_with_AdaTask.step``, in NumPy: the parameters after every step."""
    beta1, beta2 = betas
    flat, treedef = jax.tree.flatten(params)
    mask = jax.tree.leaves(shared)
    p = [np.array(x, np.float64) for x in flat]
    num_tasks = jax.tree.leaves(jacs[0])[0].shape[0]
    state = [
        {
            "exp_avg": [np.zeros_like(x) for _ in range(num_tasks)],
            "exp_avg_sq": [np.zeros_like(x) for _ in range(num_tasks)],
        }
        if s
        else {"exp_avg": np.zeros_like(x), "exp_avg_sq": np.zeros_like(x)}
        for x, s in zip(p, mask)
    ]
    history = []
    for step, jac in enumerate(jacs, start=1):
        rows = [np.asarray(x, np.float64) for x in jax.tree.leaves(jac)]
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        for i, (x, s) in enumerate(zip(rows, mask)):
            if s:  # shared: one Adam per task, each applied to the parameter
                for t in range(num_tasks):
                    grad = x[t]
                    exp_avg = state[i]["exp_avg"][t]
                    exp_avg *= beta1
                    exp_avg += (1 - beta1) * grad
                    exp_avg_sq = state[i]["exp_avg_sq"][t]
                    exp_avg_sq *= beta2
                    exp_avg_sq += (1 - beta2) * grad * grad
                    denom = np.sqrt(exp_avg_sq) / math.sqrt(bias_correction2) + eps
                    p[i] -= lr / bias_correction1 * exp_avg / denom
            else:  # task-specific: Adam on the gradient of sum_t L_t
                grad = x.sum(axis=0)
                exp_avg, exp_avg_sq = state[i]["exp_avg"], state[i]["exp_avg_sq"]
                exp_avg *= beta1
                exp_avg += (1 - beta1) * grad
                exp_avg_sq *= beta2
                exp_avg_sq += (1 - beta2) * grad * grad
                denom = np.sqrt(exp_avg_sq) / math.sqrt(bias_correction2) + eps
                p[i] -= lr / bias_correction1 * exp_avg / denom
        history.append(jax.tree.unflatten(treedef, [x.copy() for x in p]))
    return history


def _run(tx, params, jacs, losses=None):
    state = tx.init(params)
    update = jax.jit(tx.update)
    history = []
    for step, jac in enumerate(jacs):
        kwargs = {} if losses is None else {"task_losses": losses[step]}
        updates, state = update(jac, state, params, **kwargs)
        params = optax.apply_updates(params, updates)
        history.append(params)
    return history, state


@pytest.mark.parametrize("num_tasks", [2, 4])
def test_matches_the_authors_optimizer_over_several_steps(num_tasks):
    rng = np.random.default_rng(num_tasks)
    params = _params(num_tasks, rng)
    jacs = _jacobians(num_tasks, rng)
    tx = mtlx.adatask(LR, num_tasks=num_tasks)
    stacked = [mtlx.StackedJacobian(j, jax.tree.leaves(SHARED)) for j in jacs]
    got, state = _run(tx, params, stacked)
    expected = _reference(params, jacs, SHARED)
    for g, e in zip(got, expected, strict=True):
        chex.assert_trees_all_close(g, e, rtol=1e-10, atol=1e-12)
    assert int(state[0].count) == STEPS
    # A plain task-stacked pytree (every leaf shared, heads' zero rows included) is the same
    # thing: a head's other tasks add exactly zero.
    plain, _ = _run(tx, params, jacs)
    chex.assert_trees_all_close(plain, got, rtol=1e-12, atol=0)


def test_engine_jacobian_and_scan_agree_with_the_reference():
    num_tasks = 3
    rng = np.random.default_rng(7)
    params = _params(num_tasks, rng)
    xs = jnp.asarray(rng.standard_normal((STEPS, 8, 4)))
    ys = jnp.asarray(rng.standard_normal((STEPS, 8, num_tasks))) * jnp.array([0.1, 1.0, 10.0])

    def loss_fn(p, x, y):
        h = jnp.tanh(x @ p["trunk"]["w"] + p["trunk"]["b"])
        return jnp.mean((h @ p["heads"].T - y) ** 2, axis=0)

    engine = mtlx.value_and_jacobian(loss_fn, shared=SHARED)
    tx = mtlx.adatask(LR, num_tasks=num_tasks)

    def step(carry, batch):
        p, s = carry
        losses, jac = engine(p, *batch)
        updates, s = tx.update(jac, s, p, task_losses=losses)
        p = optax.apply_updates(p, updates)
        return (p, s), (p, mtlx.jacobian_rows(jac))

    (final, state), (trajectory, rows) = jax.jit(lambda c, b: jax.lax.scan(step, c, b))(
        (params, tx.init(params)), (xs, ys)
    )
    jacs = [jax.tree.map(lambda r, k=k: np.asarray(r[k]), rows) for k in range(STEPS)]
    expected = _reference(params, jacs, SHARED)
    chex.assert_trees_all_close(final, expected[-1], rtol=1e-10, atol=1e-12)
    for k in range(STEPS):
        chex.assert_trees_all_close(
            jax.tree.map(lambda x, k=k: x[k], trajectory), expected[k], rtol=1e-10, atol=1e-12
        )
    assert int(state[0].count) == STEPS


def test_one_task_is_adam():
    rng = np.random.default_rng(1)
    params = {"w": jnp.asarray(rng.standard_normal((3, 2)))}
    jacs = [{"w": jnp.asarray(rng.standard_normal((1, 3, 2)))} for _ in range(STEPS)]
    got, _ = _run(mtlx.adatask(LR, num_tasks=1), params, jacs)
    expected, _ = _run(optax.adam(LR), params, [jax.tree.map(lambda x: x[0], j) for j in jacs])
    chex.assert_trees_all_close(got, expected, rtol=1e-12, atol=1e-14)


def test_heads_get_their_own_tasks_adam_and_the_trunk_the_sum_of_per_task_adams():
    num_tasks = 3
    rng = np.random.default_rng(2)
    params = _params(num_tasks, rng)
    jacs = _jacobians(num_tasks, rng)
    tx = mtlx.scale_by_adatask(num_tasks=num_tasks)
    state = tx.init(params)
    adam = optax.scale_by_adam()
    head_state = adam.init(params["heads"])
    per_task = [adam.init(params["trunk"]) for _ in range(num_tasks)]
    for jac in jacs:
        direction, state = tx.update(mtlx.StackedJacobian(jac, jax.tree.leaves(SHARED)), state)
        head_direction, head_state = adam.update(jac["heads"].sum(axis=0), head_state)
        np.testing.assert_allclose(direction["heads"], head_direction, rtol=1e-12)
        trunk = []
        for t in range(num_tasks):
            d, per_task[t] = adam.update(
                jax.tree.map(lambda x, t=t: x[t], jac["trunk"]), per_task[t]
            )
            trunk.append(d)
        chex.assert_trees_all_close(
            direction["trunk"], jax.tree.map(lambda *d: sum(d), *trunk), rtol=1e-12
        )


def test_invariant_to_a_per_task_rescaling_of_the_losses():
    num_tasks = 3
    rng = np.random.default_rng(3)
    params = _params(num_tasks, rng)
    jacs = _jacobians(num_tasks, rng)
    c = np.array([1e-3, 1.0, 1e3])
    scaled = [jax.tree.map(lambda x: x * c.reshape((-1,) + (1,) * (x.ndim - 1)), j) for j in jacs]
    tx = mtlx.adatask(LR, eps=1e-14, num_tasks=num_tasks)
    chex.assert_trees_all_close(_run(tx, params, scaled)[0], _run(tx, params, jacs)[0], rtol=1e-9)


def test_zero_eps_gives_finite_heads():
    # eps = 0: the other tasks' moments of a head are 0, and add 0 (not 0 / 0).
    num_tasks = 2
    rng = np.random.default_rng(4)
    params = _params(num_tasks, rng)
    jacs = _jacobians(num_tasks, rng, steps=2)
    got, _ = _run(mtlx.adatask(LR, eps=0.0, num_tasks=num_tasks), params, jacs)
    chex.assert_tree_all_finite(got)
    expected = _reference(params, jacs, SHARED, eps=0.0)
    chex.assert_trees_all_close(got[-1], expected[-1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "dtype,moment_dtype",
    [("float64", "float64"), ("float32", "float32"), ("bfloat16", "float32")],
)
def test_state_shapes_dtypes_and_checkpointable(dtype, moment_dtype):
    num_tasks = 4
    rng = np.random.default_rng(5)
    params = jax.tree.map(lambda x: x.astype(dtype), _params(num_tasks, rng))
    jac = jax.tree.map(lambda x: jnp.asarray(x, dtype), _jacobians(num_tasks, rng, steps=1)[0])
    tx = mtlx.scale_by_adatask(num_tasks=num_tasks)
    state = tx.init(params)
    assert isinstance(state, mtlx.ScaleByAdaTaskState)
    chex.assert_shape(state.count, ())
    chex.assert_type(state.count, jnp.int32)
    for moments in (state.mu, state.nu):
        chex.assert_trees_all_equal_structs(moments, params)
        chex.assert_tree_shape_prefix(moments, (num_tasks,))
        jax.tree.map(lambda m, p: chex.assert_shape(m, (num_tasks, *p.shape)), moments, params)
        jax.tree.map(lambda m: chex.assert_type(m, jnp.dtype(moment_dtype)), moments)
    direction, new_state = jax.jit(tx.update)(jac, state, params)
    chex.assert_trees_all_equal_shapes_and_dtypes(direction, params)
    chex.assert_tree_all_finite(direction)
    chex.assert_trees_all_equal_shapes_and_dtypes(new_state, state)
    # Checkpointable: a NamedTuple of arrays; saved as NumPy and restored, it continues the same.
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(new_state))
    saved = [np.asarray(x) for x in jax.tree.leaves(new_state)]
    restored = jax.tree.unflatten(jax.tree.structure(state), [jnp.asarray(x) for x in saved])
    chex.assert_trees_all_equal(
        jax.jit(tx.update)(jac, restored, params), jax.jit(tx.update)(jac, new_state, params)
    )


def test_inject_hyperparams_and_a_schedule():
    num_tasks = 2
    rng = np.random.default_rng(6)
    params = _params(num_tasks, rng)
    jacs = _jacobians(num_tasks, rng)
    expected, _ = _run(mtlx.adatask(LR, b1=0.8, num_tasks=num_tasks), params, jacs)
    injected = optax.inject_hyperparams(mtlx.adatask, static_args=("num_tasks",))
    got, state = _run(injected(LR, b1=0.8, num_tasks=num_tasks), params, jacs)
    chex.assert_trees_all_close(got, expected, rtol=1e-12)
    assert set(state.hyperparams) == {"learning_rate", "b1", "b2", "eps"}
    scheduled, _ = _run(
        mtlx.adatask(optax.constant_schedule(LR), b1=0.8, num_tasks=2), params, jacs
    )
    chex.assert_trees_all_close(scheduled, expected, rtol=1e-12)


def test_not_a_jacobian_raises():
    num_tasks = 2
    rng = np.random.default_rng(8)
    params = _params(num_tasks, rng)
    jac = _jacobians(num_tasks, rng, steps=1)[0]
    tx = mtlx.adatask(LR, num_tasks=num_tasks)
    state = tx.init(params)
    gradient = jax.tree.map(lambda x: x.sum(axis=0), jac)  # params-shaped
    with pytest.raises(ValueError, match="per-task Jacobian.*complete optimizer"):
        tx.update(gradient, state, params)
    # A weighting before it hands it one gradient: the same error.
    chained = optax.chain(mtlx.ew(), tx)
    with pytest.raises(ValueError, match="no mtlx weighting before it"):
        chained.update(jac, chained.init(params), params)
    # A Jacobian of another number of tasks, or of other parameters.
    three = _jacobians(3, rng, steps=1)[0]
    with pytest.raises(ValueError, match="per-task Jacobian"):
        tx.update(three, state, params)
    engine_like = mtlx.StackedJacobian(three)
    with pytest.raises(ValueError, match="num_tasks=2"):
        tx.update(engine_like, state, params)
    # A Jacobian of other parameters: the shared prologue compares it with params first.
    with pytest.raises(ValueError, match="does not match params"):
        tx.update(mtlx.StackedJacobian({"w": jnp.ones((2, 3))}), state, params)
    with pytest.raises(ValueError, match="initialised"):
        tx.update(mtlx.StackedJacobian({"w": jnp.ones((2, 3))}), state)
    with pytest.raises(ValueError, match="init"):
        tx.init(None)


def test_bad_hyperparameters_raise():
    with pytest.raises(ValueError, match="num_tasks"):
        mtlx.adatask(LR, num_tasks=0)
    with pytest.raises(ValueError, match="b1"):
        mtlx.adatask(LR, b1=1.0, num_tasks=2)
    with pytest.raises(ValueError, match="b2"):
        mtlx.scale_by_adatask(b2=-0.1, num_tasks=2)
    with pytest.raises(ValueError, match="eps"):
        mtlx.scale_by_adatask(eps=-1e-8, num_tasks=2)
