"""mtlx.random_row_weights: RW combined with any method (Lin et al., Table 3), kept lazy."""

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtlx
from mtlx._src import jacobians as jacobians_lib
from tests import strategies


def _draw(seed, num_tasks, distribution="normal"):
    """The weights random_row_weights(distribution, seed) uses at its first step."""
    _, key = jax.random.split(jax.random.key(seed))
    return mtlx.rlw_weights(key, num_tasks, distribution)


@hypothesis.given(strategies.jacobians(), st.integers(0, 2**16))
@hypothesis.settings(max_examples=20, deadline=None)
def test_gramian_is_d_g_d_and_combine_weights_the_rows(j, seed):
    j = jnp.asarray(j)
    scales = jax.random.uniform(jax.random.key(seed), (j.shape[0],), j.dtype, 0.1, 2.0)
    scaled = mtlx.ScaledJacobian(mtlx.as_jacobian(j), scales)
    d = np.diag(np.asarray(scales))
    np.testing.assert_allclose(scaled.gramian(), d @ (j @ j.T) @ d, rtol=1e-9, atol=1e-12)
    w = jnp.linspace(0.5, 1.5, j.shape[0])
    np.testing.assert_allclose(scaled.combine(w), (w * scales) @ j, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(scaled.rows(), d @ j, rtol=1e-12)


@pytest.mark.parametrize("distribution", ["normal", "uniform", "dirichlet", "bernoulli"])
def test_followed_by_ew_it_is_rlw(distribution):
    j = jnp.array([[1.0, 2.0, 0.0], [0.0, 1.0, -1.0], [3.0, -1.0, 0.5]])
    rw = optax.chain(mtlx.random_row_weights(distribution, seed=3), mtlx.ew())
    rlw = mtlx.rlw(distribution, seed=3)
    s_rw, s_rlw = rw.init(jnp.zeros(3)), rlw.init(jnp.zeros(3))
    for _ in range(3):
        out_rw, s_rw = jax.jit(rw.update)(j, s_rw)
        out_rlw, s_rlw = jax.jit(rlw.update)(j, s_rlw)
        np.testing.assert_allclose(out_rw, out_rlw, rtol=1e-12)


@pytest.mark.parametrize("method", ["mgda", "pcgrad", "cagrad", "imtl_g", "upgrad"])
def test_a_gramian_method_after_it_sees_the_scaled_rows(method):
    j = jnp.array([[1.0, 2.0, 0.0, 1.0], [0.0, 1.0, -1.0, 2.0], [-3.0, 1.0, 0.5, 0.0]])
    tx = optax.chain(mtlx.random_row_weights(seed=7), getattr(mtlx, method)())
    out, _ = jax.jit(tx.update)(j, tx.init(jnp.zeros(4)))
    scales = _draw(7, 3)
    plain = getattr(mtlx, method)()
    expected, _ = plain.update(scales[:, None] * j, plain.init(jnp.zeros(4)))
    np.testing.assert_allclose(out, expected, rtol=1e-8, atol=1e-10)


def test_heads_get_their_scaled_own_gradient():
    """Scaling the losses scales the heads' gradients too: head t gets d_t grad_head L_t."""
    # Stacked heads: task t's gradient lives in slice t of the heads leaf only.
    heads = jnp.eye(2)[:, :, None] * jnp.ones((2, 2, 3))
    rows = {"shared": jnp.array([[1.0, 2.0], [-1.0, 1.0]]), "heads": heads}
    jac = mtlx.StackedJacobian(rows, shared_mask=(False, True))  # leaf order: heads, shared
    tx = optax.chain(mtlx.random_row_weights(seed=1), mtlx.pcgrad())
    out, _ = tx.update(jac, tx.init(None))
    scales = np.asarray(_draw(1, 2))
    np.testing.assert_allclose(out["heads"], scales[:, None] * np.ones((2, 3)), rtol=1e-12)


def test_stays_lazy_before_a_loss_only_method(monkeypatch):
    """A loss-only method after it costs one backward pass: one VJP, no rows."""
    params = {"w": jnp.array([0.3, -0.2, 0.5]), "b": jnp.array(0.1)}
    x = jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)

    def loss_fn(p, x):
        h = x @ p["w"] + p["b"]
        return jnp.stack([jnp.mean(h**2), jnp.mean((h - 1) ** 2), jnp.mean(jnp.abs(h))])

    vjp_calls = []
    original = jacobians_lib.LinearizedJacobian._vjp_leaves

    def counting(self, cotangent):
        vjp_calls.append(cotangent.shape)
        return original(self, cotangent)

    def no_rows(self):
        raise AssertionError("the rows were materialised")

    monkeypatch.setattr(jacobians_lib.LinearizedJacobian, "_vjp_leaves", counting)
    monkeypatch.setattr(jacobians_lib.LinearizedJacobian, "_row_leaves", no_rows)
    tx = optax.chain(mtlx.random_row_weights(seed=0), mtlx.uw_so(), optax.sgd(0.1))

    @jax.jit
    def step(params, state):
        losses, jac = mtlx.value_and_jacobian(loss_fn)(params, x)
        updates, state = tx.update(jac, state, params, task_losses=losses)
        return optax.apply_updates(params, updates), state

    step(params, tx.init(params))
    assert vjp_calls == [(3,)]  # one backward pass with cotangent d * w


def test_state_is_a_key_and_errors_are_clear():
    tx = mtlx.random_row_weights(num_tasks=3)
    state = tx.init(None)
    chex.assert_shape(jax.random.key_data(state.key), (2,))
    with pytest.raises(ValueError, match="built for num_tasks=3"):
        tx.update(jnp.ones((2, 4)), state)
    with pytest.raises(ValueError, match="unknown RLW distribution"):
        mtlx.random_row_weights("gamma")
    with pytest.raises(ValueError, match="concentration"):
        mtlx.random_row_weights("dirichlet", concentration=-1.0)
