"""mtlx.rgw: RLW's draws on the shared gradients only; heads keep their own gradient."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtlx
from tests.weighting.test_rlw import T, _loss_fn, _model, is_shared, step_jaxpr


def test_equals_rlw_when_every_leaf_is_shared():
    j = jnp.asarray(np.random.default_rng(0).standard_normal((T, 7)))
    rgw, rlw = mtlx.rgw(seed=5), mtlx.rlw(seed=5)
    s_rgw, s_rlw = rgw.init(None), rlw.init(None)
    for _ in range(3):
        out_rgw, s_rgw = rgw.update(j, s_rgw)
        out_rlw, s_rlw = rlw.update(j, s_rlw)
        np.testing.assert_allclose(out_rgw, out_rlw, rtol=1e-12)


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_shared_leaves_get_the_weighted_sum_heads_their_own_gradient(chunk_size):
    params, x, y = _model()
    engine = mtlx.value_and_jacobian(_loss_fn, shared=is_shared, chunk_size=chunk_size)
    losses, jac = engine(params, x, y)
    tx = mtlx.rgw(seed=2)
    out, _ = tx.update(jac, tx.init(params), params, task_losses=losses)
    weights = mtlx.rlw_weights(jax.random.split(jax.random.key(2))[1], T)
    weighted = jax.grad(lambda p: weights @ _loss_fn(p, x, y))(params)
    plain = jax.grad(lambda p: _loss_fn(p, x, y).sum())(params)
    chex.assert_trees_all_close(out["encoder"], weighted["encoder"], rtol=1e-10, atol=1e-12)
    chex.assert_trees_all_close(out["heads"], plain["heads"], rtol=1e-10, atol=1e-12)


def test_bernoulli_gradient_weights_drop_whole_tasks_from_the_shared_update():
    j = jnp.asarray(np.random.default_rng(1).standard_normal((T, 4)))
    tx = mtlx.rgw("bernoulli", seed=0)
    state = tx.init(None)
    for _ in range(4):
        key = state.key
        out, state = tx.update(j, state)
        w = mtlx.rlw_weights(jax.random.split(key)[1], T, "bernoulli")
        np.testing.assert_allclose(out, w @ j, rtol=1e-12)


def test_no_gramian_and_one_backward_without_heads():
    """The weights do not read the Jacobian: no T-batched backward pass in the step."""
    _, shapes = step_jaxpr(mtlx.rgw())
    assert (T, 8, 6) not in shapes
