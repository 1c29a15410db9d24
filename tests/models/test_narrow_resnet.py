"""mtlx.models.narrow_resnet_hps: shapes, candidate layers, parameter count, errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

nnx = pytest.importorskip("flax.nnx")

import mtlx  # noqa: E402
from mtlx import analysis, models  # noqa: E402


@pytest.mark.parametrize("shape", [(3, 8, 16, 1), (2, 28, 28, 1), (1, 1, 1, 1)])
def test_output_shapes(shape):
    model = models.narrow_resnet_hps(num_tasks=4, num_classes=10, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    out = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, jnp.ones(shape))
    assert isinstance(out, tuple) and len(out) == 4
    for y in out:
        chex.assert_shape(y, (shape[0], 10))
        assert bool(jnp.all(jnp.isfinite(y)))


def test_candidate_layers_and_sizes():
    model = models.narrow_resnet_hps(num_tasks=4, num_classes=10, rngs=nnx.Rngs(0))
    params = nnx.as_pure(nnx.state(model, nnx.Param))
    sizes = analysis.layer_sizes(params)
    shared = {k: v for k, v in sizes.items() if not k.startswith("heads")}
    assert len(shared) == 19  # stem + norm, 3 blocks (4 + 2 + 2 with projections), fc
    assert sum(shared.values()) == 20536
    assert max(shared.values()) == 32 * 32 * 9  # the last 3 x 3 convolution
    assert sizes["heads/head"] == 4 * (32 * 10 + 10)
    deeper = models.narrow_resnet_hps(widths=(8, 16), blocks=2, rngs=nnx.Rngs(0))
    deeper_layers = analysis.layer_names(nnx.as_pure(nnx.state(deeper, nnx.Param)))
    assert (
        "encoder/blocks/3/conv2" in deeper_layers and "encoder/blocks/4/conv1" not in deeper_layers
    )


def test_no_batch_statistics_and_the_engine_sees_only_shared_rows():
    model = models.narrow_resnet_hps(num_tasks=2, num_classes=3, rngs=nnx.Rngs(1))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    assert not jax.tree.leaves(rest)  # group norm: nothing but parameters
    x = jnp.ones((4, 8, 16, 1))
    y = jnp.array([0, 1, 2, 0])

    def loss_fn(p):
        logits = nnx.merge(graphdef, p, rest)(x)
        return jnp.stack([-jnp.mean(jax.nn.log_softmax(z)[jnp.arange(4), y]) for z in logits])

    @jax.jit  # one compilation; op by op, the ResNet's Jacobian dispatches for a minute
    def losses_and_gramian(p):
        losses, jac = mtlx.value_and_jacobian(loss_fn, shared=models.is_shared)(p)
        return losses, jac.gramian()

    losses, gramian = losses_and_gramian(params)
    assert losses.shape == (2,) and gramian.shape == (2, 2)
    assert np.all(np.isfinite(gramian)) and np.all(np.diagonal(gramian) > 0)


def test_errors():
    with pytest.raises(ValueError, match="divisible"):
        models.narrow_resnet_hps(widths=(6, 16), groups=4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="positive"):
        models.narrow_resnet_hps(widths=(), rngs=nnx.Rngs(0))
    model = models.narrow_resnet_hps(rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="expects images"):
        model(jnp.ones((2, 8, 16, 3)))


def test_per_task_output_sizes():
    model = models.narrow_resnet_hps(num_tasks=3, num_classes=(10, 2, 1), rngs=nnx.Rngs(0))
    out = model(jnp.ones((2, 8, 16, 1)))
    assert [y.shape for y in out] == [(2, 10), (2, 2), (2, 1)]
    with pytest.raises(ValueError, match="output sizes"):
        models.narrow_resnet_hps(num_tasks=3, num_classes=(10, 2), rngs=nnx.Rngs(0))
