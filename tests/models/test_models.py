"""mtlx.models: output shapes, stacked task-specific heads, the shared predicate, the engine."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

nnx = pytest.importorskip("flax.nnx")

import mtlx  # noqa: E402
from mtlx import models  # noqa: E402


@functools.cache
def _lenet(num_tasks=2):
    return models.lenet_hps(num_tasks=num_tasks, rngs=nnx.Rngs(0))


def _jit_forward(model, x):
    """model(x) as the training step runs it: nnx.split once, merge inside a plain jax.jit."""
    graphdef, state = nnx.split(model)
    return jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))(state, x)


@pytest.mark.parametrize("shape", [(3, 28, 28, 1), (3, 36, 36, 1), (3, 8, 16, 1)])
def test_lenet_output_shapes(shape):
    out = _jit_forward(_lenet(), jnp.ones(shape, jnp.float32))
    assert isinstance(out, tuple) and len(out) == 2
    for y in out:
        chex.assert_shape(y, (3, 10))
        assert y.dtype == jnp.float32


def test_lenet_matches_reference_sizes():
    encoder = _lenet().encoder
    assert encoder.fc.kernel.shape == (320, 50)  # Sener & Koltun's 20 * 4 * 4 features


def test_mlp_output_shapes_and_flattening():
    model = models.mlp_hps(128, hidden=(32,), num_tasks=4, out_features=3, rngs=nnx.Rngs(1))
    out = model(jnp.ones((5, 8, 16, 1)))
    assert len(out) == 4 and model.num_tasks == 4
    for y in out:
        chex.assert_shape(y, (5, 3))
    with pytest.raises(ValueError, match="128 features"):
        model(jnp.ones((5, 7)))


def test_task_heads_are_stacked_and_distinct():
    model = models.mlp_hps(6, hidden=(4,), num_tasks=3, out_features=2, rngs=nnx.Rngs(0))
    kernel = model.heads.head.kernel[...]
    chex.assert_shape(kernel, (3, 4, 2))
    assert not np.allclose(kernel[0], kernel[1])  # each head drew its own key
    x = jax.random.normal(jax.random.key(0), (5, 6), jnp.float32)
    stacked = model.heads.stacked(model.encoder(x))
    chex.assert_shape(stacked, (3, 5, 2))
    for t, y in enumerate(model(x)):
        chex.assert_trees_all_close(y, stacked[t])


def test_is_shared_marks_exactly_the_heads():
    params = nnx.state(_lenet(3), nnx.Param)
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        shared = models.is_shared(path, leaf)
        assert shared == ("['heads']" not in jax.tree_util.keystr(path)), path
        if not shared:
            assert leaf.shape[0] == 3
    assert not models.is_shared(("heads", "head", "kernel"))
    assert models.is_shared(("encoder", "fc", "kernel"))


def test_seeds_are_reproducible():
    a = nnx.state(models.lenet_hps(rngs=nnx.Rngs(7)), nnx.Param)
    b = nnx.state(models.lenet_hps(rngs=nnx.Rngs(7)), nnx.Param)
    chex.assert_trees_all_equal(a, b)


def test_engine_gives_head_rows_only_their_task():
    """value_and_jacobian(shared=is_shared) on the nnx state: head t gets task t's gradient."""
    model = models.mlp_hps(6, hidden=(4,), num_tasks=3, out_features=2, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x = jax.random.normal(jax.random.key(1), (5, 6), jnp.float32)

    def loss_fn(p, x):
        return jnp.stack([jnp.mean(y**2) for y in nnx.merge(graphdef, p, rest)(x)])

    losses, jac = jax.jit(mtlx.value_and_jacobian(loss_fn, shared=models.is_shared))(params, x)
    chex.assert_shape(losses, (3,))
    # rows() keeps every leaf's full shape: head t's block of row t is task t's gradient.
    chex.assert_trees_all_close(
        mtlx.jacobian_rows(jac), jax.jacrev(loss_fn)(params, x), atol=1e-6, rtol=1e-6
    )


def _abstract_outputs(make_model, input_shape):
    """Output shapes of a full-size model without allocating or running it."""
    graphdef, state = nnx.split(nnx.eval_shape(make_model))
    x = jax.ShapeDtypeStruct(input_shape, jnp.float32)
    return graphdef, state, jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state, x)


def test_resnet18_shapes_and_size():
    _, state, out = _abstract_outputs(lambda: models.resnet18_hps(rngs=nnx.Rngs(0)), (2, 64, 64, 3))
    assert len(out) == 40
    for y in out:
        assert y.shape == (2, 2) and y.dtype == jnp.float32
    encoder = sum(x.size for x in jax.tree.leaves(state["encoder"]))
    assert 11_150_000 < encoder < 11_200_000  # torchvision's ResNet-18 without its classifier


def test_segnet_full_size_shapes():
    _, state, out = _abstract_outputs(lambda: models.segnet_mtl(rngs=nnx.Rngs(0)), (1, 288, 384, 3))
    assert [y.shape for y in out] == [(1, 288, 384, 13), (1, 288, 384, 1), (1, 288, 384, 3)]
    assert 25_000_000 < sum(x.size for x in jax.tree.leaves(state)) < 25_200_000  # MTAN's SegNet


def test_segnet_small_runs_with_unit_normals_and_batch_norm_modes():
    tasks = {"segmentation": 7, "depth": 1, "normal": 3}
    model = models.segnet_mtl(tasks, filters=(4, 4, 4, 4, 4), rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (2, 32, 64, 3), jnp.float32)

    def batch_stats():  # a copy: nnx.state holds the live variables
        return [np.array(v) for v in jax.tree.leaves(nnx.state(model, nnx.BatchStat))]

    before = batch_stats()
    # Train mode: batch statistics, and nnx.jit writes the updated running averages back.
    seg, depth, normal = nnx.jit(lambda m, x: m(x))(model, x)
    after = batch_stats()
    assert not np.allclose(before[0], after[0])
    chex.assert_shape([seg, depth, normal], [(2, 32, 64, 7), (2, 32, 64, 1), (2, 32, 64, 3)])
    chex.assert_trees_all_close(jnp.linalg.norm(normal, axis=-1), jnp.ones((2, 32, 64)), atol=1e-5)
    model.eval()
    eval_out = _jit_forward(model, x)
    chex.assert_trees_all_equal(after, batch_stats())  # eval mode leaves them
    chex.assert_tree_all_finite(eval_out)
    assert not models.is_shared(("heads", "by_task", "depth", "out", "kernel"))
    with pytest.raises(ValueError, match="divisible by 32"):
        model(jnp.ones((1, 40, 64, 3)))


def test_max_unpool_inverts_max_pool():
    x = jax.random.normal(jax.random.key(0), (2, 4, 6, 3))
    pooled, mask = models.max_pool_with_argmax(x)
    chex.assert_trees_all_close(pooled, nnx.max_pool(x, (2, 2), strides=(2, 2)))
    unpooled = models.max_unpool(pooled, mask)
    assert int(jnp.sum(unpooled != 0)) == pooled.size  # one value per window, at its maximum
    chex.assert_trees_all_close(unpooled, jnp.where(unpooled != 0, x, 0.0))


def test_per_task_heads_through_features_engine():
    """Heterogeneous heads (no task axis) work with value_and_jacobian_through_features."""
    encoder = models.MLP(6, (4,), rngs=nnx.Rngs(0))
    heads = models.PerTaskHeads(
        {"a": nnx.Linear(4, 3, rngs=nnx.Rngs(1)), "b": nnx.Linear(4, 1, rngs=nnx.Rngs(2))}
    )
    model = models.MultiTaskModel(encoder, heads)
    assert model.num_tasks == 2 and [y.shape for y in model(jnp.ones((5, 6)))] == [(5, 3), (5, 1)]
    enc_def, enc_params = nnx.split(model.encoder)
    head_def, head_params = nnx.split(model.heads)
    x = jax.random.normal(jax.random.key(0), (5, 6), jnp.float32)

    def encoder_fn(p, x):
        return nnx.merge(enc_def, p)(x)

    def heads_fn(p, features, x):
        return jnp.stack([jnp.mean(y**2) for y in nnx.merge(head_def, p)(features)])

    params = {"encoder": enc_params, "heads": head_params}
    losses, jac = mtlx.value_and_jacobian_through_features(encoder_fn, heads_fn)(params, x)

    def loss_fn(p, x):
        return heads_fn(p["heads"], encoder_fn(p["encoder"], x), x)

    chex.assert_trees_all_close(losses, loss_fn(params, x), atol=1e-6)
    chex.assert_trees_all_close(
        mtlx.jacobian_rows(jac), jax.jacrev(loss_fn)(params, x), atol=1e-6, rtol=1e-6
    )


def test_heads_of_different_output_sizes_share_one_stacked_head():
    """Two 10-way classifiers and a scalar regression: stacked heads of width 10, task 2 reads
    one column, and the columns no task reads get zero gradients."""
    model = mtlx.models.mlp_hps(in_features=6, hidden=(8,), num_tasks=3, out_features=(10, 10, 1),
                                rngs=nnx.Rngs(0))  # fmt: skip
    x = jnp.ones((4, 6))
    assert [y.shape for y in model(x)] == [(4, 10), (4, 10), (4, 1)]
    graphdef, params = nnx.split(model, nnx.Param)

    def loss(p):
        outs = nnx.merge(graphdef, p)(x)
        return sum(jnp.sum(o**2) for o in outs)

    grads = jax.grad(loss)(params)
    kernel = np.asarray(grads["heads"]["head"]["kernel"][...])  # (T, width, max size)
    assert kernel.shape == (3, 8, 10)
    np.testing.assert_array_equal(kernel[2, :, 1:], 0.0)
    assert np.abs(kernel[2, :, 0]).sum() > 0 and np.abs(kernel[0]).sum() > 0
    # equal sizes keep the plain stacked heads (and their outputs) of an int size
    same = mtlx.models.lenet_hps(num_tasks=2, num_classes=(10, 10), rngs=nnx.Rngs(0))
    plain = mtlx.models.lenet_hps(num_tasks=2, num_classes=10, rngs=nnx.Rngs(0))
    assert same.heads.output_sizes is None
    images = jnp.ones((2, 8, 16, 1))
    np.testing.assert_array_equal(same(images)[1], plain(images)[1])
    with pytest.raises(ValueError, match="one per task"):
        mtlx.models.mlp_hps(in_features=6, num_tasks=3, out_features=(10, 1), rngs=nnx.Rngs(0))
