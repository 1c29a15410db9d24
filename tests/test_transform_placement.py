"""optax transforms placed before and after a weighting, on the engine's Jacobian.

Before a weighting, a transform meets the per-task Jacobian: it must act on the per-task gradients
exactly as on a ``jax.jacrev`` Jacobian (leaves ``(T, *param.shape)``) or fail at trace time with
an error that names the fix. The engine's Jacobian holds VJP residuals, so there it must fail.
After a weighting, a transform meets one params-shaped update and works as on any gradient.
Wrappers (``optax.MultiSteps``, ``optax.apply_if_finite``) go after the weighting too.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtlx

T = 3
FIX = "put the weighting first in optax.chain"

# Each family: loss-only (EW), Gramian (UPGrad, PCGrad: projections read from G), rows (GradDrop).
METHODS = {
    "ew": mtlx.ew,
    "upgrad": mtlx.upgrad,
    "pcgrad": lambda: mtlx.pcgrad(seed=1),
    "graddrop": lambda: mtlx.graddrop(seed=1),
}
TRANSFORMS = {
    "scale": lambda: optax.scale(0.5),
    "clip": lambda: optax.clip(0.05),
    "clip_by_global_norm": lambda: optax.clip_by_global_norm(0.1),
    "zero_nans": optax.zero_nans,
    "add_decayed_weights": lambda: optax.add_decayed_weights(0.1),
    "trace": lambda: optax.trace(0.9),
    "scale_by_adam": optax.scale_by_adam,
}


def _problem():
    rng = np.random.default_rng(0)
    params = {
        "w": jnp.asarray(rng.standard_normal((4, 5)), jnp.float32),
        "b": jnp.asarray(rng.standard_normal((5,)), jnp.float32),
    }
    x = jnp.asarray(rng.standard_normal((6, 4)), jnp.float32)

    def loss_fn(p):
        h = jnp.tanh(x @ p["w"] + p["b"])
        return jnp.stack([jnp.mean(h**2), jnp.mean(jnp.sin(3 * h)), jnp.mean((h - 0.5) ** 2)])

    return params, loss_fn


def _step(tx, jac, params, losses):
    @jax.jit
    def step(jac, params, losses):
        updates, _ = tx.update(jac, tx.init(params), params, task_losses=losses)
        return updates

    return step(jac, params, losses)


def _engine_step(tx, loss_fn, params):
    """One update from the engine's lazy Jacobian, built inside the jitted step as users do."""

    @jax.jit
    def step(params):
        losses, jac = mtlx.value_and_jacobian(loss_fn)(params)
        updates, _ = tx.update(jac, tx.init(params), params, task_losses=losses)
        return updates

    return step(params)


@pytest.mark.parametrize("transform", sorted(TRANSFORMS))
@pytest.mark.parametrize("method", sorted(METHODS))
def test_transform_before_the_weighting(method, transform):
    """On the engine's Jacobian: an error at trace time that names the fix (or, for a transform
    that is the identity on finite values, the jacrev result). On materialised rows: the
    transform acts per task, as on a jacrev Jacobian."""
    params, loss_fn = _problem()
    losses = loss_fn(params)
    rows = jax.jacrev(loss_fn)(params)
    tx = optax.chain(TRANSFORMS[transform](), METHODS[method]())
    expected = _step(tx, rows, params, losses)
    chex.assert_trees_all_equal_shapes(expected, params)
    # The documented way round: the materialised rows are exactly the jacrev Jacobian.
    materialised = jax.jit(lambda p: mtlx.jacobian_rows(mtlx.value_and_jacobian(loss_fn)(p)[1]))
    got = _step(tx, materialised(params), params, losses)
    chex.assert_trees_all_close(got, expected, rtol=1e-5, atol=1e-6)

    if transform == "zero_nans":
        # The identity on finite values, residuals included: the jacrev update.
        got = _engine_step(tx, loss_fn, params)
        chex.assert_trees_all_close(got, expected, rtol=1e-5, atol=1e-6)
        return
    if transform == "clip_by_global_norm":
        # optax's lax.select fails on the Jacobian's boolean guard leaf (JAX's own message).
        with pytest.raises(TypeError, match="bool"):
            _engine_step(tx, loss_fn, params)
        return
    with pytest.raises(ValueError, match=FIX):
        _engine_step(tx, loss_fn, params)


@pytest.mark.parametrize("transform", sorted(TRANSFORMS))
@pytest.mark.parametrize("method", sorted(METHODS))
def test_transform_after_the_weighting(method, transform):
    """After the weighting the engine's Jacobian gives the jacrev update, transform included."""
    params, loss_fn = _problem()
    losses = loss_fn(params)
    tx = optax.chain(METHODS[method](), TRANSFORMS[transform]())
    expected = _step(tx, jax.jacrev(loss_fn)(params), params, losses)
    got = _engine_step(tx, loss_fn, params)
    chex.assert_trees_all_close(got, expected, rtol=1e-5, atol=1e-6)


def test_a_scaled_engine_jacobian_is_guarded_too():
    """random_row_weights hands on a ScaledJacobian; a leaf-wise transform after it is caught."""
    params, loss_fn = _problem()
    tx = optax.chain(mtlx.random_row_weights(seed=0), optax.scale(2.0), mtlx.ew())
    with pytest.raises(ValueError, match=FIX):
        _engine_step(tx, loss_fn, params)


def test_the_jacobian_still_crosses_jit():
    """The guard leaf is a bool scalar that jax.jit hands back unchanged: no false alarm."""
    params, loss_fn = _problem()
    losses, jac = jax.jit(mtlx.value_and_jacobian(loss_fn))(params)
    tx = mtlx.upgrad()
    got = _step(tx, jac, params, losses)
    expected = _step(tx, jax.jacrev(loss_fn)(params), params, losses)
    chex.assert_trees_all_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["ew", "upgrad"])
def test_multi_steps_after_the_weighting_accumulates_the_weighted_updates(method):
    """optax.chain(weighting, optax.MultiSteps(opt, k)): zero updates for k - 1 steps, then opt
    applied to the mean of the k weighted updates."""
    params, loss_fn = _problem()
    tx = optax.chain(METHODS[method](), optax.MultiSteps(optax.sgd(1.0), every_k_schedule=2))
    plain = METHODS[method]()
    step = jax.jit(
        lambda p, s: tx.update(mtlx.value_and_jacobian(loss_fn)(p)[1], s, p, task_losses=None)
    )
    state = tx.init(params)
    second = jax.tree.map(lambda x: 0.9 * x, params)
    first_update, state = step(params, state)
    chex.assert_trees_all_equal(first_update, jax.tree.map(jnp.zeros_like, params))
    second_update, state = step(second, state)
    weighted = [plain.update(jax.jacrev(loss_fn)(p), plain.init(p), p)[0] for p in (params, second)]
    expected = jax.tree.map(lambda a, b: -(a + b) / 2, *weighted)
    chex.assert_trees_all_close(second_update, expected, rtol=1e-5, atol=1e-6)


def test_apply_if_finite_after_the_weighting_skips_a_non_finite_update():
    """optax.chain(weighting, optax.apply_if_finite(opt, n)): a NaN task loss gives a NaN
    weighted update, which is rejected (zeros) and counted; a finite one passes."""
    params, loss_fn = _problem()
    tx = optax.chain(mtlx.ew(), optax.apply_if_finite(optax.sgd(1.0), max_consecutive_errors=3))

    def nan_loss(p):
        return loss_fn(p).at[1].multiply(jnp.nan)

    def step(params, state, poisoned):
        fn = nan_loss if poisoned else loss_fn
        losses, jac = mtlx.value_and_jacobian(fn)(params)
        return tx.update(jac, state, params)

    state = tx.init(params)
    updates, state = jax.jit(step, static_argnums=2)(params, state, True)
    chex.assert_trees_all_equal(updates, jax.tree.map(jnp.zeros_like, params))
    assert int(state[1].notfinite_count) == 1
    updates, state = jax.jit(step, static_argnums=2)(params, state, False)
    expected = jax.tree.map(lambda g: -g, mtlx.ew().update(jax.jacrev(loss_fn)(params), None)[0])
    chex.assert_trees_all_close(updates, expected, rtol=1e-5, atol=1e-6)
    assert int(state[1].notfinite_count) == 0


@pytest.mark.parametrize(
    "wrapper",
    [
        lambda inner: optax.MultiSteps(inner, every_k_schedule=2),
        lambda inner: optax.apply_if_finite(inner, max_consecutive_errors=3),
    ],
    ids=["MultiSteps", "apply_if_finite"],
)
def test_wrappers_around_a_weighting_name_the_fix(wrapper):
    """Around a chain that holds a weighting, the wrapper meets the Jacobian: the error says to
    put the wrapper after the weighting."""
    params, loss_fn = _problem()
    tx = wrapper(optax.chain(mtlx.ew(), optax.adam(1e-3)))
    with pytest.raises((ValueError, TypeError), match=FIX):
        _engine_step(tx, loss_fn, params)
