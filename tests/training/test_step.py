"""The training step's Jacobian: heads are task-specific, stacked or heterogeneous."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import mtlx
from mtlx import models
from mtlx.training import classification_tasks, make_train_step, task_losses
from mtlx.training.step import multitask_jacobian

TASKS = classification_tasks(("a", "b"), (2, 3))


class _Encoder(nnx.Module):
    def __init__(self, *, rngs):
        self.linear = nnx.Linear(3, 4, rngs=rngs)

    def __call__(self, x):
        return jnp.tanh(self.linear(x))


def _heterogeneous_model():
    rngs = nnx.Rngs(0)
    heads = models.PerTaskHeads(
        {"a": nnx.Linear(4, 2, rngs=rngs), "b": nnx.Linear(4, 3, rngs=rngs)}
    )
    return models.MultiTaskModel(_Encoder(rngs=rngs), heads)


def _batch():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3)).astype(np.float32)
    labels = np.stack([rng.integers(0, 2, 8), rng.integers(0, 3, 8)], 1).astype(np.int32)
    return {"image": x, "labels": labels}


def test_heterogeneous_heads_are_task_specific_and_outside_the_gramian():
    model = _heterogeneous_model()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params, rest = nnx.as_pure(params), nnx.as_pure(rest)
    batch = _batch()

    def loss_fn(p, batch):
        return task_losses(TASKS, nnx.merge(graphdef, p, rest)(batch["image"]), batch), 0.0

    (losses, _), jac = multitask_jacobian(loss_fn)(params, batch)
    rows = jax.jacrev(lambda p: loss_fn(p, batch)[0])(params)
    np.testing.assert_allclose(losses, loss_fn(params, batch)[0], rtol=1e-6)
    np.testing.assert_array_equal(rows["heads"]["by_task"]["a"]["kernel"][1], 0.0)  # task b
    encoder = [x.reshape(2, -1) for x in jax.tree.leaves(rows["encoder"])]
    expected_g = sum(x @ x.T for x in encoder)
    np.testing.assert_allclose(jac.gramian(), expected_g, rtol=1e-5, atol=1e-7)

    w = jnp.array([0.3, 0.7])
    own, weighted = jac.combine(w, "own"), jac.combine(w, "weighted")
    for (path, got_own), got_w, row in zip(
        jax.tree_util.tree_flatten_with_path(own)[0],
        jax.tree.leaves(weighted),
        jax.tree.leaves(rows),
    ):
        name = jax.tree_util.keystr(path)
        if "heads" not in name:
            want_own = want_w = jnp.tensordot(w, row, axes=1)
        else:  # head t: its own task's gradient (times w_t when weighted)
            t = 0 if "'a'" in name else 1
            want_own, want_w = row[t], w[t] * row[t]
        np.testing.assert_allclose(got_own, want_own, rtol=1e-5, atol=1e-7, err_msg=name)
        np.testing.assert_allclose(got_w, want_w, rtol=1e-5, atol=1e-7, err_msg=name)


def test_train_step_scans_and_trains_heterogeneous_heads():
    # Stacked heads (mlp_hps) are trained by tests/training/test_loop.py.
    batches = jax.tree.map(lambda x: np.stack([x] * 5), _batch())
    tx = optax.chain(mtlx.mgda(), optax.adam(1e-2))
    fns = make_train_step(_heterogeneous_model(), TASKS, tx, steps_per_call=5)
    state, losses = fns.step(fns.init(), batches)
    assert losses.shape == (5, 2) and int(state.step) == 5
    assert (losses[-1] < losses[0]).all()
