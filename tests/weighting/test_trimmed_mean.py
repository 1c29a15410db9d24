"""mtlx.trimmed_mean: coordinate-wise trimmed mean of the rows."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import mtlx
from tests import strategies

J_TRIMMED_MEAN = np.array([[1e11, 3.0], [1.0, -1e11], [-1e10, 1e10], [2.0, 2.0]])


@functools.cache
def _jitted(trim_number):
    tx = mtlx.trimmed_mean(trim_number)
    return tx, jax.jit(tx.update)


def _apply(j, trim_number):
    tx, update = _jitted(trim_number)
    return update(j, tx.init(None))[0]


def test_known_value():
    out = _apply(jnp.asarray(J_TRIMMED_MEAN), 1)
    chex.assert_trees_all_close(out, jnp.array([1.5, 2.5]))


@pytest.mark.parametrize("num_tasks, trim_number", [(3, 1), (7, 2), (10, 4)])
def test_matches_scipy_trim_mean(num_tasks, trim_number):
    j = strategies.random_jacobian(np.random.default_rng(num_tasks), num_tasks, 9, norm_spread=2.0)
    expected = stats.trim_mean(j, trim_number / num_tasks, axis=0)
    np.testing.assert_allclose(_apply(jnp.asarray(j), trim_number), expected, rtol=1e-12)


def test_zero_trim_is_the_mean_and_robust_to_outliers():
    rng = np.random.default_rng(0)
    j = rng.standard_normal((5, 4))
    chex.assert_trees_all_close(_apply(jnp.asarray(j), 0), jnp.asarray(j.mean(0)))
    k = j.copy()
    k[1] = 1e12  # one arbitrary row cannot move a trim-1 mean outside the honest rows' range
    out = np.asarray(_apply(jnp.asarray(k), 1))
    honest = np.delete(k, 1, axis=0)
    assert np.all(out >= honest.min(0) - 1e-12) and np.all(out <= honest.max(0) + 1e-12)


def test_permutation_invariant_homogeneous_pytree():
    j = strategies.random_jacobian(np.random.default_rng(2), 5, 8)
    out = _apply(jnp.asarray(j), 1)
    chex.assert_trees_all_close(_apply(jnp.asarray(j[::-1]), 1), out, atol=1e-12)
    chex.assert_trees_all_close(_apply(jnp.asarray(2.5 * j), 1), 2.5 * out, atol=1e-12)
    tree = _apply(jax.tree.map(jnp.asarray, strategies.as_pytree(j)), 1)
    np.testing.assert_allclose(strategies.flatten_pytree(tree), out, atol=1e-12)


def test_engine_jacobian_trims_shared_leaves_only():
    params = {"w": jnp.array([[0.3, -0.2], [0.1, 0.4]]), "heads": jnp.array([[0.5, 1.0]] * 3)}
    x = jnp.linspace(-1.0, 1.0, 8).reshape(4, 2)

    def loss_fn(p, x):
        h = jnp.tanh(x @ p["w"])
        return jnp.mean((h @ p["heads"].T - jnp.arange(3.0)) ** 2, axis=0)

    shared = lambda path, leaf: "heads" not in jax.tree_util.keystr(path)  # noqa: E731
    losses, jac = mtlx.value_and_jacobian(loss_fn, shared=shared)(params, x)
    rows = jax.jacrev(loss_fn)(params, x)
    tx, update = _jitted(1)
    out, _ = update(jac, tx.init(params), params, task_losses=losses)
    chex.assert_trees_all_close(out["w"], _apply(rows["w"], 1), atol=1e-12)
    chex.assert_trees_all_close(out["heads"], rows["heads"].sum(0), atol=1e-12)


@pytest.mark.parametrize(
    "trim_number, num_tasks, match",
    [(-1, 3, "non-negative"), (1, 2, "needs at least 2 \\* trim_number")],
)
def test_bad_arguments_raise(trim_number, num_tasks, match):
    with pytest.raises(ValueError, match=match):
        tx = mtlx.trimmed_mean(trim_number)
        tx.update(jnp.ones((num_tasks, 2)), tx.init(None))
