"""mtlx.moco against a NumPy transcription of LibMTL's MoCo.backward, on hand-made steps."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from optax.projections import projection_simplex

import mtlx
from tests import strategies

# Hand-made steps: (Jacobian rows, losses). Conflicting, aligned, a zero row, and rescaled rows.
STEPS = [
    (np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0], [0.5, -2.0, 0.0]]), np.array([1.0, 2.0, 0.5])),
    (np.array([[1.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 1.0, 1.0]]), np.array([0.8, 1.5, 0.4])),
    (np.array([[0.0, 0.0, 0.0], [3.0, -1.0, 2.0], [0.1, 0.1, -0.3]]), np.array([0.7, 1.2, 0.3])),
    (
        np.array([[-40.0, 10.0, 10.0], [0.06, 0.01, 0.01], [5.0, -20.0, 0.0]]),
        np.array([0.6, 1.0, 0.3]),
    ),
]


def _numpy_moco(
    steps,
    beta=0.5,
    beta_sigma=0.5,
    gamma=0.1,
    gamma_sigma=0.5,
    rho=0.0,
    projection=False,
    normalize=True,
):
    """LibMTL's MoCo.backward (LibMTL/weighting/MoCo.py), line by line; the paper's variant with
    ``projection`` (lambda projected onto the simplex) and ``normalize=False`` (raw gradients)."""
    t = steps[0][0].shape[0]
    y, lambd, outs = np.zeros_like(steps[0][0]), np.ones(t) / t, []
    for k, (grads, losses) in enumerate(steps, start=1):
        grads = grads.copy()
        if normalize:
            for tn in range(t):
                grads[tn] = grads[tn] / (np.linalg.norm(grads[tn]) + 1e-8) * losses[tn]
        y = y - (beta / k**beta_sigma) * (y - grads)
        z = lambd - (gamma / k**gamma_sigma) * (y @ y.T + rho * np.eye(t)) @ lambd
        if projection:
            lambd = np.asarray(projection_simplex(jnp.asarray(z)))
        else:
            lambd = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        outs.append((y.T @ lambd, y.copy(), lambd.copy()))
    return outs


@functools.cache
def _transform(**kwargs):
    tx = mtlx.moco(3, **kwargs)
    return tx, jax.jit(tx.update)


def _run(steps, **kwargs):
    tx, update = _transform(**kwargs)
    state = tx.init(jnp.zeros(steps[0][0].shape[1]))
    outs = []
    for grads, losses in steps:
        out, state = update(jnp.asarray(grads), state, task_losses=jnp.asarray(losses))
        outs.append((np.asarray(out), np.asarray(state.tracked), np.asarray(state.weights)))
    return outs, state


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {
            "beta": 0.9,
            "beta_sigma": 0.0,
            "learning_rate": 0.5,
            "learning_rate_sigma": 1.0,
            "rho": 0.3,
        },
        {"lambda_update": "projection", "normalize": False},
    ],
    ids=["libmtl_defaults", "other_rates", "paper"],
)
def test_matches_the_reference_update_equations(kwargs):
    libmtl_names = {"learning_rate": "gamma", "learning_rate_sigma": "gamma_sigma"}
    reference_kwargs = {
        libmtl_names.get(k, k): v for k, v in kwargs.items() if k != "lambda_update"
    }
    reference_kwargs["projection"] = kwargs.get("lambda_update") == "projection"
    ours, state = _run(STEPS, **kwargs)
    for step, (mine, ref) in enumerate(zip(ours, _numpy_moco(STEPS, **reference_kwargs))):
        for a, b in zip(mine, ref):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=f"step {step}")
    assert int(state.count) == len(STEPS)


def test_normalized_tracking_ignores_the_row_scales():
    scaled = [(g * np.array([[1e3], [0.5], [7.0]]), losses) for g, losses in STEPS]
    ours, _ = _run(STEPS)
    theirs, _ = _run(scaled)
    for (a, *_), (b, *_) in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-12)  # up to the 1e-8 norm guard


def test_task_specific_leaves_get_their_own_gradient_and_are_not_tracked():
    rng = np.random.default_rng(0)
    shared = rng.standard_normal((3, 4))
    heads = np.zeros((3, 3, 2))
    for t in range(3):
        heads[t, t] = rng.standard_normal(2)
    jac = mtlx.as_jacobian({"heads": jnp.asarray(heads), "shared": jnp.asarray(shared)})
    jac = type(jac)(jac.rows(), shared_mask=(False, True))
    tx = mtlx.moco(3)
    losses = jnp.array([1.0, 0.5, 2.0])
    params = {"heads": jnp.zeros((3, 2)), "shared": jnp.zeros(4)}
    out, state = tx.update(jac, tx.init(params), task_losses=losses)
    flat_tx, flat_update = _transform()
    ref_out, ref_state = flat_update(
        jnp.asarray(shared), flat_tx.init(jnp.zeros(4)), task_losses=losses
    )
    np.testing.assert_allclose(out["shared"], ref_out, rtol=1e-12)
    np.testing.assert_allclose(out["heads"], heads.sum(0), rtol=1e-12)
    np.testing.assert_array_equal(state.tracked["heads"], 0.0)
    np.testing.assert_allclose(state.weights, ref_state.weights, rtol=1e-12)


def test_pytree_equals_flat_and_finite_on_degenerate_rows():
    j = strategies.random_jacobian(np.random.default_rng(1), 3, 8)
    losses = jnp.array([1.0, 2.0, 0.5])
    tx, update = _transform()
    flat, _ = update(jnp.asarray(j), tx.init(jnp.zeros(8)), task_losses=losses)
    tree_j = jax.tree.map(jnp.asarray, strategies.as_pytree(j))
    tree, _ = update(tree_j, tx.init(jax.tree.map(lambda x: x[0], tree_j)), task_losses=losses)
    np.testing.assert_allclose(strategies.flatten_pytree(tree), flat, rtol=1e-12)
    for rows in (np.zeros((3, 8)), 1e-20 * j, np.repeat(j[:1], 3, axis=0)):
        out, state = update(jnp.asarray(rows), tx.init(jnp.zeros(8)), task_losses=losses)
        chex.assert_tree_all_finite((out, state.tracked, state.weights))


def test_state_survives_scan():
    grads = jnp.asarray(np.stack([g for g, _ in STEPS]))
    losses = jnp.asarray(np.stack([l for _, l in STEPS]))
    tx, _ = _transform()

    def step(state, inputs):
        out, state = tx.update(inputs[0], state, task_losses=inputs[1])
        return state, out

    scan = jax.jit(lambda s, x: jax.lax.scan(step, s, x))
    final, outs = scan(tx.init(jnp.zeros(3)), (grads, losses))
    looped, state = _run(STEPS)
    np.testing.assert_allclose(outs, np.stack([o for o, *_ in looped]), rtol=1e-12)
    chex.assert_trees_all_close(final, state)


def test_errors():
    with pytest.raises(ValueError, match="beta"):
        mtlx.moco(2, beta=0.0)
    with pytest.raises(ValueError, match="rho"):
        mtlx.moco(2, rho=-1.0)
    with pytest.raises(ValueError, match="lambda_update"):
        mtlx.moco(2, lambda_update="sparsemax")
    tx = mtlx.moco(2)
    with pytest.raises(ValueError, match="init"):
        tx.init(None)
    with pytest.raises(ValueError, match="task_losses"):
        tx.update(jnp.ones((2, 3)), tx.init(jnp.zeros(3)))
    with pytest.raises(ValueError, match="init"):
        tx.update(jnp.ones((2, 4)), tx.init(jnp.zeros(3)), task_losses=jnp.ones(2))
    # Without normalisation the losses are optional.
    out, _ = mtlx.moco(2, normalize=False).update(jnp.ones((2, 3)), mtlx.moco(2).init(jnp.zeros(3)))
    chex.assert_shape(out, (3,))


@pytest.mark.parametrize("lambda_update", ["softmax", "projection"])
def test_huge_losses_give_the_exact_limit_not_nan_in_float32(lambda_update):
    # Tracked rows of norm L_t = 1e20 make Y Y^T = 1e40, beyond float32: the weight step is taken
    # on the Gramian of Y / max|Y| with the scale apart, so the result is the step's limit (all
    # weight on the task whose tracked row pulls least), not NaN.
    jac = jnp.array([[1.0, 2.0, 0.0], [0.0, 1.0, -1.0]], jnp.float32)
    tx = mtlx.moco(num_tasks=2, lambda_update=lambda_update)
    state = tx.init(jac[0])
    for loss in (1.0, 1e20, 1e30):
        update, state = jax.jit(tx.update)(
            jac, state, jac[0], task_losses=jnp.array([loss, 1.0], jnp.float32)
        )
        assert np.all(np.isfinite(np.asarray(update))) and update.dtype == jnp.float32
        assert np.all(np.isfinite(np.asarray(state.weights)))
    np.testing.assert_allclose(state.weights, [0.0, 1.0], atol=1e-6)


def test_weight_step_with_a_separate_scale_equals_the_plain_step():
    from mtlx.weighting._moco import moco_weights

    rng = np.random.default_rng(0)
    y = rng.standard_normal((3, 5))
    gram = y @ y.T
    w = jnp.asarray([0.2, 0.3, 0.5])
    for update in ("softmax", "projection"):
        plain = moco_weights(jnp.asarray(gram), w, step_size=0.1, rho=0.3, lambda_update=update)
        scaled = moco_weights(
            jnp.asarray(gram / 1e6), w, step_size=0.1, rho=0.3, lambda_update=update,
            gramian_scale=1e6,
        )  # fmt: skip
        np.testing.assert_allclose(scaled, plain, rtol=1e-12, atol=1e-14)
