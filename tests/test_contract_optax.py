"""Every method through optax's own machinery, over METHODS_UNDER_TEST: inject_hyperparams,
float32 / bfloat16 Jacobians, and CR-MOGM wrapping every weighting."""

import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtlx
from tests import methods_under_test

ENTRIES = methods_under_test.entries()
IDS = methods_under_test.ids()
P = 5


def _tasks(entry):
    return max(3, entry["min_tasks"])


def _jacobians(num_tasks, dtype=jnp.float64, steps=2, seed=0):
    rng = np.random.default_rng(seed)
    return [jnp.asarray(rng.standard_normal((num_tasks, P)), dtype) for _ in range(steps)]


def _losses(num_tasks, step):
    return jnp.linspace(0.5, 2.0, num_tasks) * (1.0 + 0.1 * step)


def _run(tx, jacs, dtype=None):
    params = jnp.zeros((P,), jacs[0].dtype if dtype is None else dtype)
    state = tx.init(params)
    update = jax.jit(tx.update)
    outs = []
    for step, j in enumerate(jacs):
        out, state = update(j, state, params, task_losses=_losses(j.shape[0], step))
        outs.append(out)
    return outs


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_inject_hyperparams_gives_the_same_updates(entry):
    """optax.inject_hyperparams(mtlx.NAME, static_args=...) is the method, hyperparameters in state."""
    num_tasks = _tasks(entry)
    kwargs = methods_under_test.make_kwargs(entry, num_tasks)
    factory = getattr(mtlx, entry["name"])
    injected = optax.inject_hyperparams(factory, static_args=methods_under_test.static_args(entry))
    tx = injected(**kwargs)
    jacs = _jacobians(num_tasks)
    expected = _run(factory(**kwargs), jacs)
    got = _run(tx, jacs)
    chex.assert_trees_all_close(got, expected, rtol=1e-6, atol=1e-9)
    # The hyperparameters live in the state, where a schedule or a sweep can change them.
    state = tx.init(jnp.zeros((P,)))
    numeric = [n for n in inspect.signature(factory).parameters if n in state.hyperparams]
    assert set(numeric) == set(state.hyperparams)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_low_precision_jacobians(entry, dtype):
    """A float32 / bfloat16 Jacobian gives a finite update of the params' shape and dtype (float32:
    within 1e-3 of the float64 update for deterministic methods)."""
    if dtype not in entry["dtypes"]:
        pytest.skip(f"{entry['name']} does not take {dtype} Jacobians")
    num_tasks = _tasks(entry)
    tx = methods_under_test.make(entry, num_tasks)
    jacs = _jacobians(num_tasks, jnp.dtype(dtype))
    outs = _run(tx, jacs)
    for out in outs:
        chex.assert_shape(out, (P,))
        chex.assert_type(out, jnp.dtype(dtype))
        chex.assert_tree_all_finite(out)
    if dtype != "float32" or "seed" in inspect.signature(getattr(mtlx, entry["name"])).parameters:
        return  # random draws depend on the dtype (GradDrop draws U in the rows' dtype)
    reference = _run(tx, [j.astype(jnp.float64) for j in jacs], dtype=jnp.float64)
    tol = 1e-3
    for out, ref in zip(outs, reference):
        error = np.linalg.norm(np.asarray(out, np.float64) - np.asarray(ref))
        assert error <= tol * (np.linalg.norm(np.asarray(ref)) + 1.0), (entry["name"], error)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_cr_mogm_wraps_every_weighting(entry):
    """alpha = 0 smooths nothing: CR-MOGM around any weighting is that weighting."""
    num_tasks = _tasks(entry)
    tx = methods_under_test.make(entry, num_tasks)
    if not entry["weighting"]:
        assert getattr(tx, "weighting", None) is None
        with pytest.raises(ValueError, match="not a weighting"):
            mtlx.cr_mogm(tx, num_tasks)
        return
    assert isinstance(tx.weighting, mtlx.Weighting)
    wrapped = mtlx.cr_mogm(tx, num_tasks, alpha=0.0)
    # Task-specific leaves too: a Jacobian with a stacked head leaf.
    rng = np.random.default_rng(1)
    jacs = [
        mtlx.StackedJacobian(
            {
                "heads": jnp.eye(num_tasks)[:, :, None] * rng.standard_normal((num_tasks, 1, 2)),
                "shared": jnp.asarray(rng.standard_normal((num_tasks, P))),
            },
            shared_mask=(False, True),
        )
        for _ in range(3)
    ]
    params = {"heads": jnp.zeros((num_tasks, 2)), "shared": jnp.zeros((P,))}
    s_plain, s_wrapped = tx.init(params), wrapped.init(params)
    plain_update, wrapped_update = jax.jit(tx.update), jax.jit(wrapped.update)
    for step, j in enumerate(jacs):
        losses = _losses(num_tasks, step)
        expected, s_plain = plain_update(j, s_plain, params, task_losses=losses)
        got, s_wrapped = wrapped_update(j, s_wrapped, params, task_losses=losses)
        chex.assert_trees_all_close(got, expected, rtol=1e-9, atol=1e-12)


SEEDED = [
    entry
    for entry in ENTRIES
    if "seed" in inspect.signature(getattr(mtlx, entry["name"])).parameters
]


@pytest.mark.parametrize("entry", SEEDED, ids=[entry["name"] for entry in SEEDED])
def test_seeds_may_be_numpy_integers_or_injected(entry):
    """seed=np.int64(3) and an injected seed=3 draw what seed=3 draws."""
    num_tasks = _tasks(entry)
    kwargs = methods_under_test.make_kwargs(entry, num_tasks)
    factory = getattr(mtlx, entry["name"])
    jacs = _jacobians(num_tasks, steps=3)
    expected = _run(factory(**kwargs, seed=3), jacs)
    chex.assert_trees_all_close(_run(factory(**kwargs, seed=np.int64(3)), jacs), expected)
    injected = optax.inject_hyperparams(factory, static_args=methods_under_test.static_args(entry))
    tx = injected(**kwargs, seed=3)
    assert "seed" in tx.init(jnp.zeros((P,))).hyperparams
    chex.assert_trees_all_close(_run(tx, jacs), expected, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("rescale", [0, 1, 2])
def test_cagrad_rescale_may_be_injected(rescale):
    """CAGrad's rescale is a hyperparameter like c: injected (traced), it gives the same update."""
    jacs = _jacobians(3)
    expected = _run(mtlx.cagrad(c=0.3, rescale=rescale), jacs)
    tx = optax.inject_hyperparams(mtlx.cagrad, static_args=("max_iters",))(c=0.3, rescale=rescale)
    chex.assert_trees_all_close(_run(tx, jacs), expected, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="rescale"):
        mtlx.cagrad(rescale=3)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_init_state_holds_each_array_once(entry):
    """A step that donates its optimizer state (``jax.jit(step, donate_argnums=...)``, as mtlx's
    trainer does) fails with "donate the same buffer twice" when one array fills two fields."""
    tx = methods_under_test.make(entry, _tasks(entry))
    arrays = [x for x in jax.tree.leaves(tx.init(jnp.zeros((P,)))) if isinstance(x, jax.Array)]
    assert len({id(x) for x in arrays}) == len(arrays)
