"""mtlx.imtl: hybrid IMTL (IMTL-L scales + IMTL-G balance), Liu et al. (ICLR 2021)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

import mtlx

T = 3
RNG = np.random.default_rng(0)
JAC = jnp.asarray(RNG.standard_normal((T, 6)) * np.array([[0.1], [1.0], [10.0]]))
LOSSES = jnp.array([0.5, 2.0, 8.0])


def test_first_update_is_imtl_g():
    tx, ref = mtlx.imtl(T), mtlx.imtl_g()
    out, _ = jax.jit(tx.update)(JAC, tx.init(None), None, task_losses=LOSSES)
    np.testing.assert_allclose(out, jax.jit(ref.update)(JAC, ref.init(None))[0], rtol=1e-10)


def test_equal_projections_on_the_scaled_unit_gradients():
    s = jnp.array([0.5, -1.0, 2.0])
    w = mtlx.imtl_weights(JAC @ JAC.T, s)
    update = w @ JAC
    scaled = jnp.exp(s)[:, None] * JAC
    projections = scaled @ update / jnp.linalg.norm(scaled, axis=1)
    np.testing.assert_allclose(projections, np.full(T, projections[0]), rtol=1e-8)
    np.testing.assert_allclose(jnp.sum(w / jnp.exp(s)), 1.0, rtol=1e-10)  # alpha sums to 1


@functools.cache
def _scales_after(name, steps=5):
    tx = getattr(mtlx, name)(T, 0.1, optimizer=optax.sgd)

    @jax.jit
    def run(jac, losses):
        def step(state, _):
            return tx.update(jac, state, None, task_losses=losses)[1], None

        return jax.lax.scan(step, tx.init(None), None, length=steps)[0].log_scales

    return run


def test_scales_are_learned_as_in_imtl_l():
    np.testing.assert_allclose(
        _scales_after("imtl")(JAC, LOSSES), _scales_after("imtl_l")(JAC, LOSSES), rtol=1e-12
    )


def test_task_specific_leaves_get_their_scaled_gradient():
    x = jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)
    heads = jnp.array([[1.0, 0.5], [-0.5, 1.0], [0.2, 0.2]])
    params = {"trunk": jnp.full((3, 2), 0.3), "heads": heads}

    def loss_fn(p, x):
        h = jnp.tanh(x @ p["trunk"])
        return jnp.mean((h @ p["heads"].T - 0.5) ** 2, axis=0)

    engine = mtlx.value_and_jacobian(loss_fn, shared={"trunk": True, "heads": False})
    losses, jac = engine(params, x)
    tx = mtlx.imtl(T, optimizer=optax.sgd, learning_rate=0.5)
    update = jax.jit(tx.update)
    _, state = update(jac, tx.init(params), params, task_losses=losses)  # s != 0 now
    out, _ = update(jac, state, params, task_losses=losses)
    scales = jnp.exp(state.log_scales)
    heads_grad = jax.grad(lambda h: jnp.sum(scales * loss_fn({**params, "heads": h}, x)))
    np.testing.assert_allclose(out["heads"], heads_grad(params["heads"]), rtol=1e-8)
    rows = jax.jacrev(loss_fn)(params, x)["trunk"].reshape(T, -1)
    w = mtlx.imtl_weights(rows @ rows.T, state.log_scales)
    np.testing.assert_allclose(out["trunk"].ravel(), w @ rows, rtol=1e-8)


def test_precomputed_gramian_is_used():
    tx = mtlx.imtl(T)
    other = jnp.diag(jnp.array([10.0, 1.0, 0.1]))
    out, _ = tx.update(JAC, tx.init(None), None, task_losses=LOSSES, gramian=other @ other.T)
    np.testing.assert_allclose(out, mtlx.imtl_g_weights(other @ other.T) @ JAC, rtol=1e-10)
