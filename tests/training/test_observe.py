"""The observe hook, caller-built models and optax chains, and rebuilding the trained model."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import mtlx
from mtlx import analysis, models
from mtlx.training import (
    FunctionalModel,
    StepContext,
    TrainConfig,
    classification_tasks,
    datasets,
    make_train_step,
    train,
)

SMALL = {"model_kwargs": {"hidden": (16,)}, "progress": False}
DATA = datasets.digits(num_train=256, num_test=64)


def _leaves(tree):
    """Leaves as NumPy arrays, PRNG keys as their key data (comparable bit for bit)."""
    out = []
    for x in jax.tree.leaves(tree):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        out.append(np.asarray(x))
    return out


def _batches(k, batch_size=16, seed=0):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(DATA.train["image"]), (k, batch_size))
    return {key: value[idx] for key, value in DATA.train.items()}


def _model(seed=0, hidden=(16,)):
    return models.mlp_hps(128, hidden, num_tasks=2, rngs=nnx.Rngs(seed))


def test_observe_returns_stacked_outputs_without_changing_the_step():
    tasks = classification_tasks(("left", "right"), 10)
    tx = optax.chain(mtlx.pcgrad(seed=0), optax.adam(1e-2))
    seen = {}

    def observe(ctx):
        seen["ctx"] = ctx
        assert isinstance(ctx, StepContext)
        own = jnp.argmax(ctx.outputs()[0], -1) == ctx.batch["labels"][:, 0]
        return {
            "step": ctx.step,
            "losses": ctx.losses,
            "gramian": ctx.jac.gramian(),
            "update_norm": optax.tree.norm(ctx.updates),
            "moved": optax.tree.norm(jax.tree.map(jnp.subtract, ctx.new_params, ctx.params)),
            "count": ctx.new_opt_state[1][0].count - ctx.opt_state[1][0].count,
            "accuracy": jnp.mean(own),
        }

    batches = _batches(6)
    plain = make_train_step(_model(), tasks, tx, steps_per_call=3)
    observed = make_train_step(_model(), tasks, tx, steps_per_call=3, observe=observe)
    assert observed.observes and not plain.observes
    s1, s2 = plain.init(), observed.init()
    outs = []
    for i in (0, 3):
        chunk = jax.tree.map(lambda x, i=i: x[i : i + 3], batches)
        s1, l1 = plain.step(s1, chunk)
        s2, l2, obs = observed.step(s2, chunk)
        np.testing.assert_array_equal(l1, l2)
        outs.append(obs)
    for a, b in zip(_leaves(s1), _leaves(s2), strict=True):  # the same training, bit for bit
        np.testing.assert_array_equal(a, b)
    obs = jax.tree.map(lambda *x: np.concatenate(x), *outs)
    np.testing.assert_array_equal(obs["step"], np.arange(6))  # steps taken before each one
    assert obs["gramian"].shape == (6, 2, 2) and obs["losses"].shape == (6, 2)
    np.testing.assert_allclose(obs["update_norm"], obs["moved"], rtol=1e-5)
    np.testing.assert_array_equal(obs["count"], 1)
    ctx = seen["ctx"]
    assert ctx.tasks == tasks and ctx.input_key == "image" and ctx.graphdef is observed.graphdef
    assert set(StepContext._fields) >= {
        "step", "params", "model_state", "batch", "losses", "jac", "opt_state",
        "new_opt_state", "updates", "new_params", "new_model_state",
    }  # fmt: skip


def test_train_collects_observations_over_calls_and_returns_the_model():
    config = TrainConfig(num_steps=40, steps_per_call=20, batch_size=32, **SMALL)
    base = train(config, dataset=DATA)
    result = train(
        config,
        dataset=DATA,
        observe=lambda ctx: {
            "step": ctx.step,
            "cos": analysis.statistics_from_gramian(ctx.jac.gramian()).cosine,
        },
    )
    assert base.observations is None
    assert result.observations["step"].tolist() == list(range(40))
    assert result.observations["cos"].shape == (40, 1)  # one task pair
    assert result.results == base.results  # observing does not change the run
    for a, b in zip(_leaves(base.state), _leaves(result.state), strict=True):
        np.testing.assert_array_equal(a, b)
    model = result.model()  # nnx.merge(graphdef, state.params, state.model_state)
    model.eval()
    logits = model(DATA.test["image"])
    accuracy = np.mean(np.argmax(logits[0], -1) == DATA.test["labels"][:, 0])
    np.testing.assert_allclose(accuracy, result.results["left"]["accuracy"])


def test_train_takes_a_model_and_a_chain_with_a_conflict_monitor():
    config = TrainConfig(num_steps=20, steps_per_call=10, batch_size=32, **SMALL)
    tx = optax.chain(mtlx.conflict_monitor((0.0, -0.1)), mtlx.ew(), optax.adam(1e-3))
    built = train(config, dataset=DATA, model=_model(seed=3), tx=tx)
    counts = mtlx.layer_conflict_counts(built.state.opt_state[0])
    assert set(counts) == {"encoder/layers/0"}  # the heads are task-specific: not monitored
    assert int(counts["encoder/layers/0"].sum()) <= 2 * 20
    # The same as the config's model and chain when they are the same.
    same = train(
        config, dataset=DATA, model=_model(seed=0), tx=optax.chain(mtlx.ew(), optax.adam(1e-3))
    )
    default = train(config, dataset=DATA)
    for a, b in zip(_leaves(same.state.params), _leaves(default.state.params), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="nnx.Module"):
        train(config, dataset=DATA, model=lambda x: x)


def test_a_functional_model_trains_like_the_module_it_came_from():
    config = TrainConfig(num_steps=20, steps_per_call=10, batch_size=32, **SMALL)
    module = _model(seed=0)
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    params, rest = nnx.as_pure(params), nnx.as_pure(rest)
    apply = lambda p, x: nnx.merge(graphdef, p, rest)(x)
    functional = FunctionalModel(apply, params)
    a = train(config, dataset=DATA, model=_model(seed=0))
    b = train(config, dataset=DATA, model=functional)
    for x, y in zip(_leaves(a.state.params), _leaves(b.state.params), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    assert a.results == b.results
    assert jax.tree.structure(b.model().params()) == jax.tree.structure(params)
    # Recon's split model: a leading task axis on a split layer, task-specific through shared=.
    split, axes = analysis.split_params(params, ["encoder/layers/0"], 2)
    recon = FunctionalModel(analysis.split_apply(apply, axes, 2), split)
    shared = lambda path, leaf: (
        models.is_shared(path) and "layers" not in jax.tree_util.keystr(path)
    )
    r = train(config, dataset=DATA, model=recon, shared=shared)
    kernel = r.state.params["encoder"]["layers"][0]["kernel"]
    assert kernel.shape[0] == 2 and not np.allclose(kernel[0], kernel[1])  # copies diverged
    with pytest.raises(ValueError, match="mapping with string keys"):
        FunctionalModel(apply, [1.0])
    # One pass per task (task_apply): the same training as the batched engine, for a Gramian
    # method too.
    per_task = FunctionalModel(
        analysis.split_apply(apply, axes, 2),
        split,
        task_apply=analysis.split_task_apply(apply, axes, 2),
    )
    assert per_task.has_task_outputs and not recon.has_task_outputs
    for method in ("ew", "upgrad"):
        cfg = config.replace(method=method)
        batched = train(cfg, dataset=DATA, model=recon, shared=shared)
        passes = train(cfg, dataset=DATA, model=per_task, shared=shared)
        for x, y in zip(_leaves(batched.state), _leaves(passes.state), strict=True):
            np.testing.assert_allclose(x, y, rtol=2e-4, atol=1e-6)
    with pytest.raises(ValueError, match="chunk_size"):
        train(config.replace(chunk_size=1), dataset=DATA, model=per_task, shared=shared)
    with pytest.raises(ValueError, match="no task_apply"):
        recon.task_output(0, DATA.train["image"][:2])


def test_unscanned_calls_equal_the_scan():
    config = TrainConfig(num_steps=20, steps_per_call=10, batch_size=32, method="pcgrad", **SMALL)
    observe = lambda ctx: {"step": ctx.step, "losses": ctx.losses}
    scanned = train(config, dataset=DATA, observe=observe)
    looped = train(config.replace(scan=False), dataset=DATA, observe=observe)
    np.testing.assert_array_equal(looped.observations["step"], np.arange(20))
    np.testing.assert_allclose(
        looped.observations["losses"], scanned.observations["losses"], rtol=1e-5
    )
    for a, b in zip(_leaves(scanned.state), _leaves(looped.state), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
