"""Architectures beyond hard sharing: shapes, the shared / task-specific split, the engine, the
trainer, Recon's split (LibMTL parity is in test_architectures_libmtl.py)."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

nnx = pytest.importorskip("flax.nnx")

import mtlx  # noqa: E402
from mtlx import analysis, models  # noqa: E402
from mtlx._src.paths import layer_names, layer_of_path  # noqa: E402
from mtlx.training import classification_tasks, make_train_step, task_losses  # noqa: E402
from mtlx.training.config import make_model  # noqa: E402

T = 3
IN = 12
SIZES = (4, 4, 2)  # two 4-way classifiers and a binary one: the heads are as wide as the largest
TASKS = classification_tasks(("a", "b", "c"), SIZES)
SMALL = {"in_features": IN, "hidden": (8, 6)}

# name -> (factory kwargs beyond SMALL, a shared layer that Recon splits)
ARCHITECTURES = {
    "mmoe": ({"num_experts": 3}, "experts/stages/0/linear"),
    "cgc": ({"num_experts": (2, 1)}, "experts/stages/1/linear"),
    "ple": ({"num_experts": (1, 1)}, "experts/1/linear"),
    "dselect_k": ({"num_experts": 3, "num_nonzeros": 2}, "experts/stages/1/linear"),
    "cross_stitch": ({}, "columns/stages/1/linear"),
    "mtan": ({}, "encoder/stages/0/linear"),
    "nddr_cnn": ({}, "nddr/0/linear"),
    "ltb": ({}, "nodes/0/linear"),
}


def _each(quick):
    """Every architecture; all but ``quick`` marked ``slow`` (each compiles its own program: the
    whole set takes minutes on a 2-core machine, ``-m "not slow"`` keeps one of each check)."""
    return [n if n in quick else pytest.param(n, marks=pytest.mark.slow) for n in ARCHITECTURES]


@functools.cache
def _model(name, seed=0):
    kwargs, _ = ARCHITECTURES[name]
    return getattr(models, name)(
        num_tasks=T, out_features=SIZES, **SMALL, **kwargs, rngs=nnx.Rngs(seed)
    )


def _batch(n=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, IN)).astype(np.float32)
    labels = np.stack([rng.integers(0, k, n) for k in SIZES], 1).astype(np.int32)
    return {"image": x, "labels": labels}


def _split(name):
    graphdef, params, rest = nnx.split(_model(name), nnx.Param, ...)
    return graphdef, nnx.as_pure(params), nnx.as_pure(rest)


def _loss_fn(graphdef, rest):
    def loss_fn(params, batch):
        return task_losses(TASKS, nnx.merge(graphdef, params, rest)(batch["image"]), batch)

    return loss_fn


@pytest.mark.parametrize("name", _each(set(ARCHITECTURES) - {"mtan", "ple"}))
def test_output_shapes_under_jit(name):
    graphdef, state = nnx.split(_model(name))
    x = jnp.asarray(_batch(5)["image"])
    out = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, x)
    assert isinstance(out, tuple) and len(out) == T and _model(name).num_tasks == T
    for y, k in zip(out, SIZES):
        chex.assert_shape(y, (5, k))
        assert y.dtype == jnp.float32
        chex.assert_tree_all_finite(y)


@pytest.mark.parametrize("name", _each({"mmoe", "cross_stitch"}))
def test_engine_rows_equal_per_task_grads_and_task_specific_leaves_are_their_tasks(name):
    """Against ``jax.jacrev`` of the loss vector (row t: ``jax.grad`` of task t): the engine's
    rows on shared leaves, its ``"own"`` combination on task-specific ones (slice t: task t's
    gradient), the Gramian of the shared part; and the claim the split rests on, checked on the
    model: every leaf ``is_shared`` calls task-specific has a leading T axis and task s's loss
    has zero gradient on its slices t != s."""
    graphdef, params, rest = _split(name)
    loss_fn = _loss_fn(graphdef, rest)
    batch = _batch()

    @jax.jit
    def run(params, batch):
        losses, jac = mtlx.value_and_jacobian(loss_fn, shared=models.is_shared)(params, batch)
        own = jac.combine(jnp.full((T,), 0.5), "own")
        return losses, jac.rows(), own, jac.gramian(), jax.jacrev(loss_fn)(params, batch)

    losses, rows, own, gramian, per_task = run(params, batch)
    np.testing.assert_allclose(losses, loss_fn(params, batch), rtol=1e-5)
    paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    shared_rows, kinds = [], set()
    for path, row, got_own, want in zip(paths, *map(jax.tree.leaves, (rows, own, per_task))):
        key = jax.tree_util.keystr(path)
        if models.is_shared(path):
            np.testing.assert_allclose(row, want, rtol=2e-5, atol=1e-6, err_msg=key)
            shared_rows.append(np.reshape(want, (T, -1)))
            continue
        kinds.add("task_specific" in key)
        assert want.shape[1] == T, key  # a leading task axis
        for s in range(T):
            np.testing.assert_array_equal(np.delete(want[s], s, axis=0), 0.0, err_msg=key)
            np.testing.assert_allclose(got_own[s], want[s][s], rtol=2e-5, atol=1e-6, err_msg=key)
        assert np.abs(want).sum() > 0, key
    assert shared_rows
    # Gates, task experts and attention units are under task_specific; column models have none.
    assert kinds == (
        {True, False} if name in ("mmoe", "cgc", "ple", "dselect_k", "mtan") else {False}
    )
    shared = np.concatenate(shared_rows, axis=1)
    np.testing.assert_allclose(gramian, shared @ shared.T, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("name", _each({"mtan"}))
def test_three_tasks_train_with_ew_pcgrad_upgrad_in_one_jitted_step(name):
    """One jitted function: each step, the engine's Jacobian of each method's copy of the model,
    the method, Adam; ``lax.scan`` over 8 steps. Every method lowers the summed loss."""
    graphdef, params, rest = _split(name)
    loss_fn = _loss_fn(graphdef, rest)
    engine = mtlx.value_and_jacobian(loss_fn, shared=models.is_shared)
    txs = [optax.chain(m, optax.adam(1e-2)) for m in (mtlx.ew(), mtlx.pcgrad(), mtlx.upgrad())]
    batch = _batch(32, seed=2)

    @jax.jit
    def train(states):
        def step(states, _):
            new, losses = [], []
            for tx, (p, opt) in zip(txs, states):
                value, jac = engine(p, batch)
                updates, opt = tx.update(jac, opt, p, task_losses=value)
                new.append((optax.apply_updates(p, updates), opt))
                losses.append(value)
            return new, jnp.stack(losses)

        return jax.lax.scan(step, states, length=8)

    _, losses = train([(params, tx.init(params)) for tx in txs])  # (8 steps, 3 methods, T)
    assert losses.shape == (8, 3, T) and np.isfinite(losses).all()
    assert (losses[-1].sum(-1) < losses[0].sum(-1)).all(), losses[[0, -1]].sum(-1)


def test_the_trainer_steps_an_architecture():
    tx = optax.chain(mtlx.upgrad(), optax.adam(1e-2))
    fns = make_train_step(_model("cgc"), TASKS, tx, steps_per_call=4)
    batches = jax.tree.map(lambda x: np.stack([x] * 4), _batch(32, seed=2))
    state, losses = fns.step(fns.init(), batches)
    assert losses.shape == (4, T) and int(state.step) == 4
    assert losses[-1].sum() < losses[0].sum()


@pytest.mark.parametrize("name", _each({"nddr_cnn"}))
def test_recon_splits_a_shared_layer(name):
    _, layer = ARCHITECTURES[name]
    graphdef, params, rest = _split(name)
    assert layer in layer_names(params)

    def apply(p, x):
        return nnx.merge(graphdef, p, rest)(x)

    split, axes = analysis.split_params(params, [layer], T)
    split_fn = analysis.split_apply(apply, axes, T)
    batch = _batch()
    base = jax.tree_util.tree_map_with_path(lambda p, _: models.is_shared(p), params)

    def loss_fn(p, batch):
        return task_losses(TASKS, split_fn(p, batch["image"]), batch)

    engine = mtlx.value_and_jacobian(loss_fn, shared=analysis.shared_mask(axes, base))

    @jax.jit
    def run(split, params, batch):
        outputs = split_fn(split, batch["image"]), apply(params, batch["image"])
        own = engine(split, batch)[1].combine(jnp.ones((T,)), "own")
        return outputs, own, jax.jacrev(loss_fn)(split, batch)

    (a, b), own, per_task = run(split, params, batch)
    for y_split, y in zip(a, b):  # copies of the layer: the same function
        np.testing.assert_allclose(y_split, y, rtol=1e-5, atol=1e-6)
    flat = jax.tree_util.tree_flatten_with_path(split)[0]
    split_leaves = 0
    for (path, _), got, want in zip(flat, jax.tree.leaves(own), jax.tree.leaves(per_task)):
        if layer_of_path(path) == layer:
            split_leaves += 1
            for t in range(T):  # copy t: task t's gradient, and no other task's
                np.testing.assert_allclose(got[t], want[t][t], rtol=1e-5, atol=1e-6)
                np.testing.assert_array_equal(np.delete(want[t], t, axis=0), 0.0)
    assert split_leaves >= 1


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_make_model_builds_each_by_name(name):
    kwargs, _ = ARCHITECTURES[name]
    model = make_model(
        name,
        num_tasks=2,
        seed=0,
        input_shape=(8, 16, 1),
        output_sizes={"left": 10, "right": 10},
        hidden=(8,) * 3,
        **kwargs,
    )
    out = model(jnp.ones((2, 8, 16, 1)))
    assert len(out) == 2 and out[0].shape == (2, 10)


@pytest.mark.parametrize(
    ("name", "backbone"),
    [("mtan", "lenet")]
    + [
        pytest.param(n, b, marks=pytest.mark.slow)
        for n, b in [(n, "lenet") for n in ARCHITECTURES if n != "mtan"]
        + [("cross_stitch", "resnet18"), ("mmoe", "resnet18")]
    ],
)
def test_image_backbones(name, backbone):
    shape = (2, 32, 32, 3) if backbone == "resnet18" else (2, 8, 16, 1)
    kwargs = {k: v for k, v in ARCHITECTURES[name][0].items()}
    if backbone == "resnet18":
        kwargs["small_inputs"] = True
        kwargs.update({"num_experts": 2} if name == "mmoe" else {})
    model = getattr(models, name)(
        num_tasks=2,
        out_features=5,
        in_features=int(np.prod(shape[1:])),
        in_channels=shape[-1],
        backbone=backbone,
        rngs=nnx.Rngs(0),
        **kwargs,
    )
    # Traced, not run: eager or compiled, two ResNet-18 columns cost tens of seconds.
    graphdef, state = nnx.split(model)
    out = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state, jnp.ones(shape))
    assert [y.shape for y in out] == [(2, 5), (2, 5)]


def test_ple_needs_batch_norm_free_stages():
    with pytest.raises(ValueError, match="mlp or lenet"):
        models.ple(num_tasks=2, in_features=3 * 32 * 32, backbone="resnet18", rngs=nnx.Rngs(0))


def test_ltb_samples_in_training_and_takes_the_argmax_tree_in_eval():
    model = models.ltb(num_tasks=T, out_features=2, **SMALL, rngs=nnx.Rngs(0))
    x = jnp.asarray(_batch(4)["image"])
    assert [len(p) for p in model.parents()] == [T]  # two stages: one choice of parents
    a, b = model(x), model(x)  # two Gumbel draws
    assert not np.allclose(a[0], b[0])
    model.branch_logits[0][...] = jnp.array([[5, 0, 0], [5, 0, 0], [0, 0, 5]], jnp.float32)
    model.eval()
    assert model.parents()[0] == [0, 0, 2]
    np.testing.assert_array_equal(model.branch_weights(0), np.eye(T)[[0, 0, 2]])
    c, d = model(x), model(x)
    np.testing.assert_array_equal(c[0], d[0])


def test_is_shared_keeps_heads_and_adds_task_specific():
    assert not models.is_shared(("heads", "head", "kernel"))
    assert not models.is_shared(("task_specific", "gates", "kernel"))
    assert models.is_shared(("experts", "stages", 0, "linear", "kernel"))
    assert models.is_shared(("encoder", "fc", "kernel"))


def test_mtan_without_batch_norm_is_the_same_function_in_train_and_eval():
    model = models.mtan(num_tasks=2, out_features=3, batch_norm=False, **SMALL, rngs=nnx.Rngs(0))
    assert model.task_specific["attention"][0].bn1 is None
    x = jnp.asarray(_batch(4)["image"])
    model.train()
    a = model(x)
    model.eval()
    for y_train, y_eval in zip(a, model(x)):
        np.testing.assert_array_equal(y_train, y_eval)
    with_bn = models.mtan(num_tasks=2, out_features=3, **SMALL, rngs=nnx.Rngs(0))
    assert _count(with_bn) - _count(model) == 2 * 2 * 2 * sum(SMALL["hidden"])  # scale, bias


def _count(model):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


@pytest.mark.parametrize("name", _each({"cgc"}))
def test_conflict_monitor_observes_the_shared_layers_only(name):
    """The monitor, before a method in the trainer's step, sees exactly the shared layers."""
    tx = optax.chain(analysis.conflict_monitor(every=1, num_tasks=T), mtlx.ew(), optax.adam(1e-2))
    fns = make_train_step(_model(name), TASKS, tx, steps_per_call=2)
    state, _ = fns.step(fns.init(), jax.tree.map(lambda x: np.stack([x] * 2), _batch()))
    summary = analysis.layer_conflict_summary(state.opt_state)
    _, params, _ = _split(name)
    shared = {
        layer_of_path(p)
        for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]
        if models.is_shared(p)
    }
    assert set(summary) - {"<all shared>"} == shared
    assert summary["<all shared>"]["observations"] == 2 * T * (T - 1) // 2  # steps x task pairs
