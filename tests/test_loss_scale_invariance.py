"""Which methods are invariant to the scale of one task's loss (Elich et al., "Challenging Common
Paradigms in Multi-Task Learning"), on a small hard-parameter-sharing model.

Task 0's loss is multiplied by c; every run takes 5 steps from the same initialisation on the same
batches, and its updates are compared with those of c = 1:

* EW + Adam: Adam normalises each coordinate, so task 0's head (which only task 0's loss reaches)
  moves the same for every c; the shared encoder sees ``c g_0 + g_1 + ...``, whose direction
  depends on c, so it does not.
* AdaTask: one Adam per task on the shared parameters too, so the whole update is invariant.
* UW-O (weights 1 / L_t) with SGD or Adam: ``(c g_0) / (c L_0)`` does not depend on c.
* EW + SGD: task 0's head update is c times the unscaled one.

Adam's and UW-O's ``eps`` are tiny (1e-12), so "invariant" is exact up to rounding (1e-6).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtlx

T, D, H, BATCH, STEPS = 3, 4, 8, 16, 5
LR = 1e-2
EPS = 1e-12
SCALES = (0.01, 0.1, 10.0, 100.0)


def _init():
    rng = np.random.default_rng(0)
    return {
        "encoder": {
            "w": jnp.asarray(rng.standard_normal((D, H)) / np.sqrt(D)),
            "b": jnp.asarray(0.1 * rng.standard_normal(H)),
        },
        "heads": [
            {"w": jnp.asarray(rng.standard_normal(H) / np.sqrt(H)), "b": jnp.asarray(0.1 * t)}
            for t in range(T)
        ],
    }


PARAMS = _init()
SHARED = jax.tree.map(lambda _: True, PARAMS) | {
    "heads": jax.tree.map(lambda _: False, PARAMS["heads"])
}


def _batches():
    rng = np.random.default_rng(1)
    xs = rng.standard_normal((STEPS, BATCH, D))
    ys = rng.standard_normal((STEPS, BATCH, T)) + np.arange(T)  # tasks of different losses
    return jnp.asarray(xs), jnp.asarray(ys)


BATCHES = _batches()


def loss_fn(params, x, y, c):
    """Per-task MSE of T linear heads on a shared tanh layer; task 0's loss times c."""
    features = jnp.tanh(x @ params["encoder"]["w"] + params["encoder"]["b"])
    losses = jnp.stack(
        [
            jnp.mean((features @ h["w"] + h["b"] - y[:, t]) ** 2)
            for t, h in enumerate(params["heads"])
        ]
    )
    return losses.at[0].multiply(c)


ENGINE = mtlx.value_and_jacobian(loss_fn, shared=SHARED)


def freeze_encoder(tx):
    """``tx`` with the encoder's updates zeroed: the heads train on fixed features."""
    mask = jax.tree.map(lambda _: False, PARAMS) | {
        "encoder": jax.tree.map(lambda _: True, PARAMS["encoder"])
    }
    return optax.chain(tx, optax.masked(optax.set_to_zero(), mask))


TRANSFORMS = {
    "ew+adam": lambda: optax.chain(mtlx.ew(), optax.adam(LR, eps=EPS)),
    "ew+adam, frozen encoder": lambda: freeze_encoder(
        optax.chain(mtlx.ew(), optax.adam(LR, eps=EPS))
    ),
    "adatask": lambda: mtlx.adatask(LR, eps=EPS, num_tasks=T),
    "uw_o+sgd": lambda: optax.chain(mtlx.uw_o(eps=EPS), optax.sgd(LR)),
    "uw_o+adam": lambda: optax.chain(mtlx.uw_o(eps=EPS), optax.adam(LR, eps=EPS)),
    "ew+sgd": lambda: optax.chain(mtlx.ew(), optax.sgd(LR)),
}


@functools.cache
def _runner(name):
    """The 5-step run of configuration ``name`` as a function of c, jitted once."""
    tx = TRANSFORMS[name]()

    def step(carry, batch, c):
        params, state = carry
        losses, jac = ENGINE(params, *batch, c)
        updates, state = tx.update(jac, state, params, task_losses=losses)
        return (optax.apply_updates(params, updates), state), updates

    @jax.jit
    def run(c):
        carry = (PARAMS, tx.init(PARAMS))
        _, updates = jax.lax.scan(lambda carry, batch: step(carry, batch, c), carry, BATCHES)
        return updates  # every leaf (STEPS, *param_shape)

    return run


@functools.cache
def updates(name, c):
    return jax.tree.map(np.asarray, _runner(name)(jnp.asarray(c, jnp.float64)))


def assert_invariant(got, expected, rtol=1e-6):
    """Leaf by leaf, within ``rtol`` of the leaf's largest entry."""

    def check(a, b):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.max(np.abs(b)))

    jax.tree.map(check, got, expected)


def relative_difference(a, b):
    a, b = (np.concatenate([np.ravel(x) for x in jax.tree.leaves(t)]) for t in (a, b))
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def first_step(tree):
    return jax.tree.map(lambda x: x[0], tree)


@pytest.mark.parametrize("c", SCALES)
def test_ew_adam_task_head_is_invariant(c):
    # Task 0's head sees only c g_0: Adam's m / sqrt(v) removes c. With the encoder frozen the
    # head's gradients stay c times the same ones, so all 5 steps match (Adam's memory included);
    # when the encoder trains it moves differently for every c (next test), so from step 2 on the
    # head sees other features: there only step 1 is comparable.
    frozen = "ew+adam, frozen encoder"
    assert_invariant(updates(frozen, c)["heads"][0], updates(frozen, 1.0)["heads"][0])
    assert_invariant(
        first_step(updates("ew+adam", c)["heads"][0]),
        first_step(updates("ew+adam", 1.0)["heads"][0]),
    )


def test_ew_adam_shared_encoder_is_not_invariant():
    # The encoder's gradient c g_0 + g_1 + g_2 turns towards g_0 as c grows.
    scaled, plain = updates("ew+adam", 100.0)["encoder"], updates("ew+adam", 1.0)["encoder"]
    assert relative_difference(scaled, plain) > 0.5  # about 1 here


@pytest.mark.parametrize("c", SCALES)
def test_adatask_whole_update_is_invariant(c):
    assert_invariant(updates("adatask", c), updates("adatask", 1.0))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("c", SCALES)
def test_uw_o_whole_update_is_invariant(c, optimizer):
    # w_0 = 1 / (c L_0): the weighted gradient (c g_0) / (c L_0) is the same for every c.
    name = f"uw_o+{optimizer}"
    assert_invariant(updates(name, c), updates(name, 1.0))


@pytest.mark.parametrize("c", SCALES)
def test_ew_sgd_task_head_update_scales_by_c(c):
    scaled = first_step(updates("ew+sgd", c)["heads"][0])
    plain = first_step(updates("ew+sgd", 1.0)["heads"][0])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, c * b, rtol=1e-10), scaled, plain)
    assert relative_difference(scaled, plain) > 0.5 * abs(c - 1)
