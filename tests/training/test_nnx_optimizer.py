"""The stateful Flax NNX route: model_value_and_jacobian + MultiTaskOptimizer inside nnx.jit."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import mtlx
from mtlx import models
from mtlx.training import MultiTaskOptimizer, model_value_and_jacobian

T = 3


class SmallCNN(nnx.Module):
    """A user's own model: conv, BatchNorm, dropout, and stacked heads under ``heads``."""

    def __init__(self, *, dropout: float = 0.0, rngs: nnx.Rngs):
        self.conv = nnx.Conv(1, 4, (3, 3), rngs=rngs)
        self.norm = nnx.BatchNorm(4, rngs=rngs)
        self.dense = nnx.Linear(4 * 8 * 8, 16, rngs=rngs)
        self.drop = nnx.Dropout(dropout, rngs=rngs)
        self.heads = models.TaskHeads(lambda r: nnx.Linear(16, 10, rngs=r), T, rngs=rngs)

    def __call__(self, x):
        h = nnx.relu(self.norm(self.conv(x)))
        h = self.drop(nnx.relu(self.dense(h.reshape(h.shape[0], -1))))
        return self.heads(h)


def task_losses(model, batch):
    outputs = model(batch["x"])
    return jnp.stack(
        [
            optax.softmax_cross_entropy_with_integer_labels(y, batch["y"][:, t]).mean()
            for t, y in enumerate(outputs)
        ]
    )


def _batch(seed):
    rng = np.random.default_rng(seed)
    return {
        "x": jnp.asarray(rng.standard_normal((16, 8, 8, 1)), jnp.float32),
        "y": jnp.asarray(rng.integers(0, 10, (16, T))),
    }


def _tx():
    return optax.chain(mtlx.mgda(), optax.sgd(0.1))


@nnx.jit
def _step(model, optimizer, batch):
    losses, jac = model_value_and_jacobian(task_losses, model, batch)
    optimizer.update(model, jac, task_losses=losses)
    return losses


def _functional_reference(batches):
    """The same training as a pure function of the split state (the trainer's way)."""
    model = SmallCNN(rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params, rest = nnx.as_pure(params), nnx.as_pure(rest)
    tx = _tx()
    opt_state = tx.init(params)

    def loss_fn(p, rest, batch):
        module = nnx.merge(graphdef, p, rest)
        return task_losses(module, batch), nnx.as_pure(nnx.state(module, nnx.Not(nnx.Param)))

    engine = mtlx.value_and_jacobian(loss_fn, shared=models.is_shared, has_aux=True)

    @jax.jit
    def step(params, rest, opt_state, batch):
        (losses, rest), jac = engine(params, rest, batch)
        updates, opt_state = tx.update(jac, opt_state, params, task_losses=losses)
        return optax.apply_updates(params, updates), rest, opt_state

    for batch in batches:
        params, rest, opt_state = step(params, rest, opt_state, batch)
    return params, rest


def test_stateful_route_equals_the_functional_one_with_batchnorm():
    batches = [_batch(s) for s in range(3)]
    model = SmallCNN(rngs=nnx.Rngs(0))
    optimizer = MultiTaskOptimizer(model, _tx(), wrt=nnx.Param)
    for batch in batches:
        losses = _step(model, optimizer, batch)
        assert losses.shape == (T,) and np.all(np.isfinite(np.asarray(losses)))
    params, rest = _functional_reference(batches)
    for a, b in zip(
        jax.tree.leaves(nnx.as_pure(nnx.state(model, nnx.Param))), jax.tree.leaves(params)
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # The BatchNorm running statistics moved, as in the functional run.
    np.testing.assert_allclose(model.norm.mean[...], rest["norm"]["mean"], rtol=1e-5, atol=1e-6)
    assert not np.allclose(model.norm.mean[...], 0.0)
    assert int(optimizer.step[...]) == 3


def test_heads_stay_out_of_the_gramian():
    """MGDA on the shared rows only: the heads' gradients must not enter its weights."""
    model = SmallCNN(rngs=nnx.Rngs(0))
    batch = _batch(0)
    _, jac = model_value_and_jacobian(task_losses, model, batch)
    _, everything = model_value_and_jacobian(task_losses, model, batch, shared=lambda p, x: True)
    assert not np.allclose(jac.gramian(), everything.gramian())
    rows = jax.tree.leaves(jac.rows())
    mask = jac.shared_mask
    reference = sum(
        (x.reshape(T, -1) @ x.reshape(T, -1).T for x, s in zip(rows, mask) if s), start=0.0
    )
    np.testing.assert_allclose(jac.gramian(), reference, rtol=1e-5)


def test_dropout_streams_advance_and_plain_gradients_still_work():
    model = SmallCNN(dropout=0.5, rngs=nnx.Rngs(0))
    optimizer = MultiTaskOptimizer(model, _tx(), wrt=nnx.Param)
    before = jax.tree.leaves(nnx.state(model, nnx.RngCount))
    _step(model, optimizer, _batch(0))
    after = jax.tree.leaves(nnx.state(model, nnx.RngCount))
    assert any(int(a) != int(b) for a, b in zip(after, before))  # dropout drew its key
    # Ordinary nnx.grad gradients go through nnx.Optimizer.update unchanged.
    plain = MultiTaskOptimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    grads = nnx.grad(lambda m: task_losses(m, _batch(1)).sum())(model)
    plain.update(model, grads)
    assert int(plain.step[...]) == 1


def test_a_jacobian_through_plain_nnx_optimizer_is_refused_by_nnx():
    # Why MultiTaskOptimizer exists: nnx.Optimizer filters the Jacobian away.
    model = SmallCNN(rngs=nnx.Rngs(0))
    _, jac = model_value_and_jacobian(task_losses, model, _batch(0))
    optimizer = nnx.Optimizer(model, _tx(), wrt=nnx.Param)
    with pytest.raises(ValueError, match="MultiTaskOptimizer"):
        optimizer.update(model, jac, task_losses=jnp.ones(T))


def test_the_linen_train_state_route_from_the_readme():
    """Linen + TrainState: the step taken from its parts, batch statistics through has_aux."""
    import flax.linen as nn
    from flax.training import train_state

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = True):
            h = nn.relu(nn.BatchNorm(use_running_average=not train)(nn.Dense(16)(x)))
            return tuple(nn.Dense(10, name=f"heads_{t}")(h) for t in range(T))

    net = Net()
    batch = _batch(0)
    x = batch["x"].reshape(16, -1)
    variables = net.init(jax.random.key(0), x)
    state = train_state.TrainState.create(apply_fn=net.apply, params=variables["params"], tx=_tx())
    stats = variables["batch_stats"]

    def loss_fn(params, stats):
        outputs, updates = net.apply(
            {"params": params, "batch_stats": stats}, x, mutable=["batch_stats"]
        )
        losses = jnp.stack(
            [
                optax.softmax_cross_entropy_with_integer_labels(y, batch["y"][:, t]).mean()
                for t, y in enumerate(outputs)
            ]
        )
        return losses, updates["batch_stats"]

    heads_are_task_specific = lambda path, leaf: "heads_" not in jax.tree_util.keystr(path)  # noqa: E731

    @jax.jit
    def step(state, stats):
        (losses, stats), jac = mtlx.value_and_jacobian(
            loss_fn, shared=heads_are_task_specific, has_aux=True
        )(state.params, stats)
        updates, opt_state = state.tx.update(jac, state.opt_state, state.params, task_losses=losses)
        state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            opt_state=opt_state,
        )
        return state, stats, jac

    new_state, new_stats, jac = step(state, stats)
    assert int(new_state.step) == 1
    assert not jax.tree.all(jax.tree.map(jnp.array_equal, new_stats, stats))  # statistics moved
    assert sum(not s for s in jac.shared_mask) == 2 * T  # each head's kernel and bias
    # A head's update is its own task's gradient, as MGDA leaves task-specific leaves alone.
    grad_0 = jax.grad(lambda p: loss_fn(p, stats)[0][0])(state.params)["heads_0"]["kernel"]
    moved = state.params["heads_0"]["kernel"] - new_state.params["heads_0"]["kernel"]
    np.testing.assert_allclose(moved, 0.1 * grad_0, rtol=1e-4, atol=1e-6)
