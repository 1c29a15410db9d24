"""A narrow residual CNN with group norm: many small candidate layers for Recon-style studies."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from mtlx.models._hps import MultiTaskModel, TaskHeads


def _norm(features: int, groups: int, rngs: nnx.Rngs) -> nnx.GroupNorm:
    # Group norm, not batch norm: no running statistics, so the forward pass is a pure function
    # of the parameters and a layer split by ``jax.vmap`` (Recon) needs no per-copy batch state.
    return nnx.GroupNorm(features, num_groups=min(groups, features), rngs=rngs)


class NarrowBlock(nnx.Module):
    """``conv3x3 -> GN -> ReLU -> conv3x3 -> GN`` plus a shortcut (a 1 x 1 conv + GN when the
    shape changes), then ReLU: the basic block of ResNet (He et al., CVPR 2016) with group norm.

    Args:
      in_features: input channels.
      features: output channels.
      stride: stride of the first convolution and of the projection.
      groups: the group norm's groups (at most ``features``).
      rngs: the random streams.
    """

    def __init__(
        self, in_features: int, features: int, stride: int = 1, *, groups: int, rngs: nnx.Rngs
    ):
        self.conv1 = nnx.Conv(
            in_features, features, (3, 3), strides=stride, padding=1, use_bias=False, rngs=rngs
        )
        self.norm1 = _norm(features, groups, rngs)
        self.conv2 = nnx.Conv(features, features, (3, 3), padding=1, use_bias=False, rngs=rngs)
        self.norm2 = _norm(features, groups, rngs)
        if stride != 1 or in_features != features:
            self.proj = nnx.Conv(
                in_features, features, (1, 1), strides=stride, use_bias=False, rngs=rngs
            )
            self.proj_norm = _norm(features, groups, rngs)
        else:
            self.proj = self.proj_norm = None

    def __call__(self, x: jax.Array) -> jax.Array:
        y = nnx.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        shortcut = x if self.proj is None else self.proj_norm(self.proj(x))
        return nnx.relu(y + shortcut)


class NarrowResNetEncoder(nnx.Module):
    """``conv3x3 -> GN -> ReLU``, then stages of :class:`NarrowBlock` (the first block of every
    stage after the first halves the resolution), global average pooling, ``Linear -> ReLU``.

    With the defaults (widths 8, 16, 32; one block per stage) the encoder has 19 Conv / GroupNorm /
    Linear modules and about 20 k parameters: deep enough that a few layers are a small share of
    the shared parameters, small enough to train in seconds on a CPU (8 x 16 Multi-Digits images).

    Args:
      in_channels: image channels.
      widths: channels per stage.
      blocks: blocks per stage.
      features: the output width (the Linear layer after pooling).
      groups: the group norms' groups.
      rngs: the random streams.
    """

    def __init__(
        self,
        in_channels: int = 1,
        *,
        widths: Sequence[int] = (8, 16, 32),
        blocks: int = 1,
        features: int = 32,
        groups: int = 4,
        rngs: nnx.Rngs,
    ):
        widths = tuple(int(w) for w in widths)
        if not widths or min(widths) < 1 or int(blocks) < 1 or int(features) < 1:
            raise ValueError(
                f"widths must be positive and non-empty, blocks and features positive; got "
                f"widths={widths}, blocks={blocks}, features={features}."
            )
        if any(w % min(groups, w) for w in widths):
            raise ValueError(f"every width must be divisible by groups={groups}; got {widths}.")
        self.in_channels = int(in_channels)
        self.out_features = int(features)
        self.stem = nnx.Conv(
            self.in_channels, widths[0], (3, 3), padding=1, use_bias=False, rngs=rngs
        )
        self.stem_norm = _norm(widths[0], groups, rngs)
        layers, width = [], widths[0]
        for i, w in enumerate(widths):
            for b in range(int(blocks)):
                stride = 2 if (i > 0 and b == 0) else 1
                layers.append(NarrowBlock(width, w, stride, groups=groups, rngs=rngs))
                width = w
        self.blocks = nnx.List(layers)
        self.fc = nnx.Linear(width, self.out_features, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(
                f"NarrowResNetEncoder expects images (N, H, W, {self.in_channels}); got {x.shape}."
            )
        x = nnx.relu(self.stem_norm(self.stem(x)))
        for block in self.blocks:
            x = block(x)
        return nnx.relu(self.fc(jnp.mean(x, axis=(1, 2))))


def narrow_resnet_hps(
    num_tasks: int = 2,
    num_classes: int | Sequence[int] = 10,
    *,
    in_channels: int = 1,
    widths: Sequence[int] = (8, 16, 32),
    blocks: int = 1,
    features: int = 32,
    groups: int = 4,
    rngs: nnx.Rngs,
) -> MultiTaskModel:
    """A narrow group-norm ResNet shared by T linear heads (a small stand-in for ResNet-18).

    Recon (Shi et al., ICLR 2023) splits the top-K of a ResNet-18's Conv / BatchNorm / Linear
    layers; on a CPU, ResNet-18 trains too slowly for a multi-seed study with controls, and a
    3-layer LeNet is too shallow for K layers to be a small share of the shared parameters. This
    model keeps the ResNet structure (stem, residual blocks with projections, global pooling) at
    widths 8 / 16 / 32: 19 candidate layers, whose sizes range from 16 (a group norm) to 9,216
    parameters (the last 3 x 3 convolution). Group norm replaces batch norm so the forward pass
    has no running statistics.

    ``model(x)`` takes images ``(N, H, W, in_channels)`` (any size ≥ 1 x 1; 8 x 16 Multi-Digits)
    and returns ``num_tasks`` logit arrays ``(N, num_classes)``.

    Args:
      num_tasks: T.
      num_classes: classes per task, or one output size per task (the stacked heads are as wide
        as the largest; task t reads its first ``num_classes[t]`` columns).
      in_channels: image channels.
      widths: channels per stage.
      blocks: residual blocks per stage.
      features: the encoder's output width.
      groups: groups of every group norm.
      rngs: the random streams (``nnx.Rngs(seed)``).

    Returns:
      A :class:`MultiTaskModel`: :class:`NarrowResNetEncoder` and T stacked
      ``nnx.Linear(features, num_classes)``.
    """
    encoder = NarrowResNetEncoder(
        in_channels, widths=widths, blocks=blocks, features=features, groups=groups, rngs=rngs
    )
    width = encoder.out_features
    heads = TaskHeads.sized(
        lambda size, r: nnx.Linear(width, size, rngs=r), num_classes, num_tasks, rngs=rngs
    )
    return MultiTaskModel(encoder, heads)
