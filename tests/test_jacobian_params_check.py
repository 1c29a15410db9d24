"""Every method checks, at trace time, that the Jacobian it is given is a Jacobian of ``params``.

Each leaf must be ``(T, *param.shape)`` (the engine's Jacobian: params' tree structure); the error
says what was passed instead: params-shaped gradients (``jax.grad``, or a second weighting chained
after a first), a task axis that comes last, a Jacobian of other parameters.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtlx
from tests import methods_under_test

ENTRIES = methods_under_test.entries()
IDS = methods_under_test.ids()


def _problem(num_tasks):
    rng = np.random.default_rng(0)
    params = {
        "w": jnp.asarray(rng.standard_normal((4, num_tasks))),
        "b": jnp.asarray(rng.standard_normal((num_tasks,))),
    }
    x = jnp.asarray(rng.standard_normal((6, 4)))

    def loss_fn(p):
        h = jnp.tanh(x @ p["w"] + p["b"])
        return jnp.mean((h - jnp.linspace(-1, 1, num_tasks)) ** 2, axis=0)

    return params, loss_fn


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_params_shaped_gradients_are_refused(entry):
    """jax.grad output (P == T here: the leading axis alone cannot tell) names what it is."""
    num_tasks = max(3, entry["min_tasks"])
    params, loss_fn = _problem(num_tasks)
    tx = methods_under_test.make(entry, num_tasks)
    gradient = jax.grad(lambda p: loss_fn(p).sum())(params)
    losses = loss_fn(params)
    with pytest.raises(ValueError, match="params-shaped gradient"):
        jax.jit(tx.update)(gradient, tx.init(params), params, task_losses=losses)
    # The Jacobian itself passes the check.
    jax.jit(tx.update)(jax.jacrev(loss_fn)(params), tx.init(params), params, task_losses=losses)


@pytest.mark.parametrize("first", ["rlw", "ew", "upgrad"])
def test_a_second_weighting_is_refused(first):
    params, loss_fn = _problem(3)
    tx = optax.chain(getattr(mtlx, first)(), mtlx.mgda())
    losses, jac = mtlx.value_and_jacobian(loss_fn)(params)
    with pytest.raises(ValueError, match=r"mtlx\.mgda .*params-shaped gradient.*weighting chained"):
        tx.update(jac, tx.init(params), params, task_losses=losses)


@pytest.mark.parametrize("method", ["ew", "upgrad", "graddrop"])
def test_a_task_axis_that_comes_last_is_refused(method):
    params, loss_fn = _problem(3)
    params = {"w": params["w"][:, :2], "b": params["b"][:2]}  # P per leaf != T

    def loss_2(p):
        return jnp.stack([jnp.sum(p["w"] ** 2), jnp.sum(p["b"]), jnp.sum(jnp.sin(p["w"]))])

    rows = jax.jacrev(loss_2)(params)
    task_last = jax.tree.map(lambda x: jnp.moveaxis(x, 0, -1), rows)
    tx = getattr(mtlx, method)()
    with pytest.raises(ValueError, match="task axis must come first"):
        tx.update(task_last, tx.init(params), params)
    tx.update(rows, tx.init(params), params)


def test_a_jacobian_of_other_parameters_is_refused():
    params, loss_fn = _problem(3)
    _, jac = mtlx.value_and_jacobian(loss_fn)(params)
    tx = mtlx.upgrad()
    other = {"w": params["w"], "b": params["b"], "extra": jnp.zeros(2)}
    with pytest.raises(ValueError, match="tree structure does not match params"):
        tx.update(jac, tx.init(other), other)
    rows = jax.jacrev(loss_fn)(params)
    with pytest.raises(ValueError, match="tree structure does not match params"):
        tx.update({"w": rows["w"]}, tx.init(params), params)


def test_without_params_nothing_is_checked_against_them():
    """params=None (optax's default) keeps the old behaviour: the rows' own checks only."""
    params, loss_fn = _problem(3)
    updates, _ = mtlx.ew().update(jax.jacrev(loss_fn)(params), optax.EmptyState())
    assert jax.tree.structure(updates) == jax.tree.structure(params)
