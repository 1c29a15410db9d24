"""mtlx.uw_so and mtlx.uw_o: the paper's formula on hand-computed cases, limits, one backward."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtlx
from tests.weighting.test_rlw import T, _loss_fn, _model, count_matmuls, is_shared, step_jaxpr

LOSSES = jnp.array([1.0, 2.0, 4.0])


@functools.cache
def _update(name):
    tx = getattr(mtlx, name)()
    return tx, jax.jit(tx.update)


def _weights(name, losses):
    """The weights, read off the update on J = I."""
    tx, update = _update(name)
    j = jnp.eye(len(losses))
    return np.asarray(update(j, tx.init(None), task_losses=jnp.asarray(losses))[0])


def test_uw_so_hand_computed():
    # inverse losses [1, 1/2, 1/4]; softmax: e^1, e^0.5, e^0.25 over their sum 5.651028
    np.testing.assert_allclose(
        _weights("uw_so", LOSSES), [0.4810243, 0.2917560, 0.2272198], rtol=1e-6
    )
    inv = 1.0 / (np.asarray(LOSSES) + 1e-8)
    expected = np.exp(inv / 0.5) / np.exp(inv / 0.5).sum()
    np.testing.assert_allclose(mtlx.uw_so_weights(LOSSES, temperature=0.5), expected, rtol=1e-12)


def test_uw_o_hand_computed_and_default_eps():
    np.testing.assert_allclose(_weights("uw_o", LOSSES), [1.0, 0.5, 0.25], rtol=1e-7)
    np.testing.assert_allclose(mtlx.uw_o_weights(jnp.array([0.0, 1e-8])), [1e8, 0.5e8], rtol=1e-12)


@pytest.mark.parametrize("losses", [[1.0, 2.0, 4.0], [3.0, 0.5, 0.7]])
def test_temperature_to_zero_is_one_hot_on_the_smallest_loss(losses):
    w = mtlx.uw_so_weights(jnp.asarray(losses), temperature=1e-3)
    np.testing.assert_allclose(w, jax.nn.one_hot(np.argmin(losses), 3), atol=1e-12)


def test_temperature_to_infinity_is_uniform():
    np.testing.assert_allclose(mtlx.uw_so_weights(LOSSES, temperature=1e9), 1.0 / 3.0, rtol=1e-8)


def test_zero_and_negative_losses_give_finite_weights():
    losses = jnp.array([0.0, -0.5, 1.0])
    expected = [1e8, 1e8, 1.0 / (1.0 + 1e-8)]
    np.testing.assert_allclose(mtlx.uw_o_weights(losses), expected, rtol=1e-12)
    w = mtlx.uw_so_weights(losses)
    chex.assert_tree_all_finite(w)
    np.testing.assert_allclose(w, [0.5, 0.5, 0.0], atol=1e-12)


def test_weights_are_a_stop_gradient_of_the_losses():
    for fn in (mtlx.uw_so_weights, mtlx.uw_o_weights):
        grad = jax.grad(lambda losses: fn(losses) @ jnp.arange(3.0))(LOSSES)
        np.testing.assert_array_equal(grad, 0.0)


def test_uw_o_update_is_invariant_to_a_tasks_loss_scale():
    """Scaling L_t by c scales grad L_t by c and w_t by 1/c: the update does not move."""
    j = jnp.asarray(np.random.default_rng(0).standard_normal((3, 5)))
    c = jnp.array([1.0, 100.0, 0.1])  # losses stay >> eps
    tx, update = _update("uw_o")
    out = update(j, tx.init(None), task_losses=LOSSES)[0]
    scaled = update(c[:, None] * j, tx.init(None), task_losses=c * LOSSES)[0]
    np.testing.assert_allclose(scaled, out, rtol=1e-6)


@pytest.mark.parametrize("name", ["uw_so", "uw_o"])
def test_update_is_the_gradient_of_the_weighted_loss_heads_included(name):
    params, x, y = _model()
    engine = mtlx.value_and_jacobian(_loss_fn, shared=is_shared)
    losses, jac = engine(params, x, y)
    tx = getattr(mtlx, name)()
    out, _ = tx.update(jac, tx.init(params), params, task_losses=losses)
    w = getattr(mtlx, f"{name}_weights")(losses)
    chex.assert_trees_all_close(out, jax.grad(lambda p: w @ _loss_fn(p, x, y))(params), rtol=1e-10)


@pytest.mark.parametrize("name", ["uw_so", "uw_o"])
def test_one_backward_pass_with_the_engine(name):
    jaxpr, shapes = step_jaxpr(getattr(mtlx, name)())
    assert (T, 8, 6) not in shapes
    ew_jaxpr, _ = step_jaxpr(mtlx.ew())
    assert count_matmuls(jaxpr) == count_matmuls(ew_jaxpr)


def test_needs_task_losses():
    tx = mtlx.uw_so()
    with pytest.raises(ValueError, match="needs the task losses"):
        tx.update(jnp.eye(3), tx.init(None))


@pytest.mark.parametrize(
    "factory, kwargs",
    [
        (mtlx.uw_so, dict(temperature=0.0)),
        (mtlx.uw_so, dict(temperature=-1.0)),
        (mtlx.uw_so, dict(temperature=float("inf"))),
        (mtlx.uw_so, dict(eps=0.0)),
        (mtlx.uw_o, dict(eps=-1e-8)),
    ],
)
def test_bad_hyperparameters_raise(factory, kwargs):
    with pytest.raises(ValueError, match="temperature|eps"):
        factory(**kwargs)


def test_inject_hyperparams_temperature():
    tx = optax.inject_hyperparams(mtlx.uw_so)(temperature=0.5)
    state = tx.init(None)
    out, state = jax.jit(tx.update)(jnp.eye(3), state, task_losses=LOSSES)
    np.testing.assert_allclose(out, mtlx.uw_so_weights(LOSSES, 0.5), rtol=1e-10)
    state.hyperparams["temperature"] = jnp.asarray(2.0)
    out, _ = jax.jit(tx.update)(jnp.eye(3), state, task_losses=LOSSES)
    np.testing.assert_allclose(out, mtlx.uw_so_weights(LOSSES, 2.0), rtol=1e-10)
