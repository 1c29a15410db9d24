"""NDDR-CNN (Gao, Ma, Zhao, Liu, Yuille, CVPR 2019): task columns fused by discriminative
dimensionality reduction between stages."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mtlx.models._cross_stitch import readout_per_task, run_stage
from mtlx.models._resnet import _batch_norm
from mtlx.models._stages import (
    BackboneSpec,
    StagedEncoder,
    backbone_spec,
    heads_per_task,
    map_stacked,
    stack,
)


class NDDRLayer(nnx.Module):
    """One task's NDDR layer: ``ReLU(BN(W [h_1, ..., h_T]))``, ``W`` a 1 x 1 convolution (a
    ``Linear`` on the channel axis) from ``T * C`` to ``C`` channels, without bias."""

    def __init__(self, num_tasks: int, features: int, *, rngs: nnx.Rngs):
        self.linear = nnx.Linear(num_tasks * features, features, use_bias=False, rngs=rngs)
        self.bn = _batch_norm(features, rngs)

    def __call__(self, concatenated: jax.Array) -> jax.Array:
        return nnx.relu(self.bn(self.linear(concatenated)))


def nddr_init(num_tasks: int, features: int, alpha: float, beta: float) -> np.ndarray:
    """The paper's initialisation, ``(T, T * C, C)``: task t's ``W`` is ``alpha * I`` on its own
    block of input channels and ``beta * I`` on every other task's."""
    eye = np.eye(features, dtype=np.float32)
    out = np.empty((num_tasks, num_tasks * features, features), np.float32)
    for t in range(num_tasks):
        for s in range(num_tasks):
            out[t, s * features : (s + 1) * features] = (alpha if s == t else beta) * eye
    return out


class NDDR(nnx.Module):
    r"""NDDR-CNN (Gao et al., "NDDR-CNN: Layerwise Feature Fusing in Multi-Task CNNs by Neural
    Discriminative Dimensionality Reduction", CVPR 2019).

    One column (a whole ``spec`` backbone) per task; after every stage but the last, each task
    concatenates all columns' features on the channel axis and reduces them back to its own
    width with a 1 x 1 convolution, batch norm and ReLU:

    .. math:: \tilde h^{k}_t = \mathrm{ReLU}\big(\mathrm{BN}_t(W^{k}_t\,
        [h^{k}_1; \ldots; h^{k}_T])\big), \qquad h^{k+1}_t = \mathrm{stage}^{k+1}_t(\tilde h^{k}_t)

    ``W`` starts as the paper's "diagonal" initialisation: ``alpha`` times the identity on the
    task's own channels, ``beta`` on the others' (0.9 / 0.1 by default). On MLP stages the
    1 x 1 convolution is a ``Linear`` on the feature axis.

    What is shared: LibMTL 1.1.5 has no NDDR-CNN; following its convention for column models
    (Cross-stitch: the whole encoder is the shared part the weighting sees), the columns
    (``columns``, stacked ``(T, ...)``) and the NDDR layers (``nddr``, stacked ``(T, ...)``) are
    shared, the heads task-specific. Exact too: each NDDR layer reads every column.

    Args:
      spec: the columns' backbone.
      num_tasks: T.
      out_features: each head's output size, or one per task.
      alpha: the initial weight on a task's own features.
      beta: the initial weight on another task's features.
      rngs: the random streams.
    """

    def __init__(
        self,
        spec: BackboneSpec,
        num_tasks: int,
        out_features: int | Sequence[int],
        *,
        alpha: float = 0.9,
        beta: float = 0.1,
        rngs: nnx.Rngs,
    ):
        num_tasks = int(num_tasks)
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be positive; got {num_tasks}.")
        if spec.num_stages < 2:
            raise ValueError("NDDR-CNN needs a backbone of at least two stages.")
        self.spec = spec
        self.columns = stack(lambda r: StagedEncoder(spec, rngs=r), num_tasks, rngs)
        layers = []
        for k in range(spec.num_stages - 1):
            width = spec.widths[k]
            layer = stack(lambda r, w=width: NDDRLayer(num_tasks, w, rngs=r), num_tasks, rngs)
            layer.linear.kernel[...] = jnp.asarray(nddr_init(num_tasks, width, alpha, beta))
            layers.append(layer)
        self.nddr = nnx.List(layers)
        self.heads = spec.make_heads(out_features, num_tasks, rngs)

    @property
    def num_tasks(self) -> int:
        return self.heads.num_tasks

    def fuse(self, k: int, h: jax.Array) -> jax.Array:
        """The k-th NDDR layer of every task on the columns' outputs ``(T, N, ..., C)``."""
        concatenated = jnp.concatenate(list(h), axis=-1)  # [h_1; ...; h_T] on the channel axis
        return map_stacked(lambda layer, v: layer(v), self.nddr[k], concatenated, in_axes=None)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, ...]:
        h = run_stage(self.columns, 0, x, shared_input=True)
        for k in range(1, self.spec.num_stages):
            h = run_stage(self.columns, k, self.fuse(k - 1, h))
        return heads_per_task(self.heads, readout_per_task(self.spec, h))


def nddr_cnn(
    num_tasks: int = 2,
    out_features: int | Sequence[int] = 10,
    *,
    in_features: int | None = None,
    backbone: str = "mlp",
    hidden: Sequence[int] = (64, 64),
    in_channels: int = 1,
    small_inputs: bool = False,
    alpha: float = 0.9,
    beta: float = 0.1,
    rngs: nnx.Rngs,
) -> NDDR:
    """An :class:`NDDR` network: T columns of ``backbone`` fused by NDDR layers between stages
    (backbone arguments as :func:`mtlx.models.cross_stitch`)."""
    spec = backbone_spec(
        backbone,
        in_features=in_features,
        in_channels=in_channels,
        hidden=hidden,
        small_inputs=small_inputs,
    )
    return NDDR(spec, num_tasks, out_features, alpha=alpha, beta=beta, rngs=rngs)
