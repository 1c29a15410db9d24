"""MTAN (Liu, Johns, Davison, CVPR 2019): task-specific soft attention over a shared backbone."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from mtlx.models._cross_stitch import readout_per_task
from mtlx.models._resnet import BasicBlock
from mtlx.models._stages import (
    BackboneSpec,
    StagedEncoder,
    backbone_spec,
    heads_per_task,
    map_stacked,
    stack,
)


class AttentionUnit(nnx.Module):
    """MTAN's attention module ``g``: ``sigmoid(BN(W2 ReLU(BN(W1 z))))``, ``W1`` and ``W2``
    1 x 1 convolutions with bias (a ``Linear`` on the channel axis), as LibMTL's ``_att_layer``."""

    def __init__(
        self,
        in_features: int,
        hidden: int,
        features: int,
        *,
        momentum: float = 0.9,
        batch_norm: bool = True,
        rngs: nnx.Rngs,
    ):
        self.linear1 = nnx.Linear(in_features, hidden, rngs=rngs)
        self.linear2 = nnx.Linear(hidden, features, rngs=rngs)
        if batch_norm:
            self.bn1 = nnx.BatchNorm(hidden, momentum=momentum, epsilon=1e-5, rngs=rngs)
            self.bn2 = nnx.BatchNorm(features, momentum=momentum, epsilon=1e-5, rngs=rngs)
        else:
            self.bn1 = self.bn2 = None

    def __call__(self, z: jax.Array) -> jax.Array:
        z = self.linear1(z)
        z = nnx.relu(z if self.bn1 is None else self.bn1(z))
        z = self.linear2(z)
        return nnx.sigmoid(z if self.bn2 is None else self.bn2(z))


class _ProjectedBlock(nnx.Module):
    """LibMTL's ``encoder_block_att`` for ResNet: a stride-1 :class:`BasicBlock` to the next
    stage's channels (its shortcut a 1 x 1 convolution with batch norm)."""

    def __init__(self, in_features: int, features: int, *, rngs: nnx.Rngs):
        self.block = BasicBlock(in_features, features, 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        y = self.block(x)
        return y, y


def _pool_to(x: jax.Array, like: jax.Array) -> jax.Array:
    """Max-pool (2 x 2) a batch of feature maps until their spatial size is ``like``'s."""
    while x.ndim == 4 and x.shape[1:3] != like.shape[1:3] and x.shape[1] > like.shape[1]:
        x = nnx.max_pool(x, (2, 2), strides=(2, 2))
    return x


class MTAN(nnx.Module):
    r"""Multi-Task Attention Network (Liu, Johns, Davison, "End-to-End Multi-Task Learning with
    Attention", CVPR 2019), as LibMTL's ``MTAN``, over any staged backbone.

    A shared backbone computes, per stage k, an intermediate feature :math:`u^k` and the stage
    output :math:`p^k`; each task t keeps attended features

    .. math:: \hat a^{k}_t = g^{k}_t\big([u^k;\, f^{k-1}(\hat a^{k-1}_t)]\big) \odot p^k, \qquad
        y_t = h_t(\hat a^{K}_t)

    (:math:`g^0_t` reads :math:`u^0` alone), with :math:`g^k_t` a task's
    :class:`AttentionUnit` (sigmoid mask, hidden width = the stage's channels) and
    :math:`f^k` one block shared by all tasks that maps stage-k features to stage k+1's width,
    max-pooled to its spatial size when smaller: for ResNet-18 a stride-1 :class:`BasicBlock`
    (LibMTL's ``encoder_block_att``; :math:`u^k` is the first block's output, :math:`p^k` the
    second's), for the MLP and LeNet a fresh copy of stage k+1 (:math:`u^k = p^k`).

    What is shared: the backbone (``encoder``, as LibMTL's ``shared_conv``/``shared_layer``) and
    the blocks :math:`f^k` (``block_att``); task-specific: the attention units
    (``task_specific.attention``, stacked ``(T, ...)``) and the heads. LibMTL leaves
    ``encoder_block_att`` out of its shared parameters, so there its gradient is the plain sum
    over tasks, unweighted; here it is shared, because every task's loss depends on it, and a
    parameter without a task axis cannot be task-specific (see :func:`mtlx.value_and_jacobian`).

    .. note::
      The masks are sigmoids of batch-normalised features, and ``eval`` mode reads the batch
      norms' running averages. On the MLP backbone with batches of 64 the trained masks depend
      on the exact batch statistics: on Multi-Digits (seed 0, 1500 steps) one task reached 0.72
      test accuracy with PyTorch's momentum (``momentum=0.9`` here) and 0.52 with 0.99, against
      0.95 with the training set's exact statistics; ``batch_norm=False`` (masks
      ``sigmoid(W2 ReLU(W1 z))``) gave 0.95 / 0.95 in both modes. The configs and the
      architecture study use ``batch_norm=False`` on the MLP.

    Args:
      spec: the shared backbone.
      num_tasks: T.
      out_features: each head's output size, or one per task.
      momentum: the running-average momentum of the attention units' batch norms (flax's
        convention: the weight of the old average).
      batch_norm: batch norm in the attention units (the paper's and LibMTL's).
      rngs: the random streams.
    """

    def __init__(
        self,
        spec: BackboneSpec,
        num_tasks: int,
        out_features: int | Sequence[int],
        *,
        momentum: float = 0.9,
        batch_norm: bool = True,
        rngs: nnx.Rngs,
    ):
        num_tasks = int(num_tasks)
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be positive; got {num_tasks}.")
        self.spec = spec
        self.encoder = StagedEncoder(spec, rngs=rngs)
        widths = spec.widths
        blocks = []
        for k in range(spec.num_stages - 1):
            if spec.name == "resnet18":
                blocks.append(_ProjectedBlock(widths[k], widths[k + 1], rngs=rngs))
            else:
                blocks.append(spec.make_stage(k + 1, rngs))
        self.block_att = nnx.List(blocks)
        units = []
        for k, width in enumerate(widths):
            in_width = width if k == 0 else 2 * width
            units.append(
                stack(
                    lambda r, i=in_width, w=width: AttentionUnit(
                        i, w, w, momentum=momentum, batch_norm=batch_norm, rngs=r
                    ),
                    num_tasks,
                    rngs,
                )
            )
        self.task_specific = nnx.Dict(attention=nnx.List(units))
        self.heads = spec.make_heads(out_features, num_tasks, rngs)

    @property
    def num_tasks(self) -> int:
        return self.heads.num_tasks

    def attended(self, x: jax.Array) -> jax.Array:
        """Every task's attended features after the last stage, ``(T, N, ...)``."""
        units = self.task_specific["attention"]
        h, att = x, None
        for k, stage in enumerate(self.encoder.stages):
            u, p = stage(h)
            h = p
            if att is None:
                mask = map_stacked(lambda g, z: g(z), units[k], u, in_axes=None)
            else:
                att = jax.vmap(lambda a, u=u: _pool_to(a, u))(att)  # to this stage's size
                z = jnp.concatenate([jnp.broadcast_to(u[None], (att.shape[0], *u.shape)), att], -1)
                mask = map_stacked(lambda g, v: g(v), units[k], z)
            att = mask * p[None]
            if k + 1 < self.spec.num_stages:
                # One block for all tasks, each task's features a call of their own (its batch
                # statistics its own, as in LibMTL).
                block = self.block_att[k]
                att = jnp.stack([block(a)[1] for a in att])
        return att

    def __call__(self, x: jax.Array) -> tuple[jax.Array, ...]:
        return heads_per_task(self.heads, readout_per_task(self.spec, self.attended(x)))


def mtan(
    num_tasks: int = 2,
    out_features: int | Sequence[int] = 10,
    *,
    in_features: int | None = None,
    backbone: str = "mlp",
    hidden: Sequence[int] = (64, 64),
    in_channels: int = 1,
    small_inputs: bool = False,
    momentum: float = 0.9,
    batch_norm: bool = True,
    rngs: nnx.Rngs,
) -> MTAN:
    """An :class:`MTAN` over a shared ``backbone`` (``"mlp"`` with ``in_features`` and
    ``hidden``, ``"lenet"`` or ``"resnet18"`` with ``in_channels``); attention at every stage.

    ``model(x)`` returns T arrays ``(N, out_features)``; ``momentum`` and ``batch_norm``: the
    attention units' batch norms (see :class:`MTAN`).
    """
    spec = backbone_spec(
        backbone,
        in_features=in_features,
        in_channels=in_channels,
        hidden=hidden,
        small_inputs=small_inputs,
    )
    return MTAN(spec, num_tasks, out_features, momentum=momentum, batch_norm=batch_norm, rngs=rngs)
