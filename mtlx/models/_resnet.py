"""ResNet-18 (He et al., CVPR 2016) as a shared encoder, with T linear heads (CelebA)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mtlx.models._hps import MultiTaskModel, TaskHeads


def _batch_norm(features: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
    # PyTorch's BatchNorm2d defaults: momentum 0.1 (0.9 here: flax weighs the running average).
    return nnx.BatchNorm(features, momentum=0.9, epsilon=1e-5, rngs=rngs)


class BasicBlock(nnx.Module):
    """Two 3 x 3 convolutions with batch norm and an identity (or 1 x 1 projection) shortcut.

    Args:
      in_features: input channels.
      features: output channels.
      stride: the stride of the first convolution (and of the projection).
      rngs: the random streams.
    """

    def __init__(self, in_features: int, features: int, stride: int = 1, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(
            in_features, features, (3, 3), strides=stride, padding=1, use_bias=False, rngs=rngs
        )
        self.bn1 = _batch_norm(features, rngs)
        self.conv2 = nnx.Conv(features, features, (3, 3), padding=1, use_bias=False, rngs=rngs)
        self.bn2 = _batch_norm(features, rngs)
        if stride != 1 or in_features != features:
            self.proj = nnx.Conv(
                in_features, features, (1, 1), strides=stride, use_bias=False, rngs=rngs
            )
            self.proj_bn = _batch_norm(features, rngs)
        else:
            self.proj = self.proj_bn = None

    def __call__(self, x: jax.Array) -> jax.Array:
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        shortcut = x if self.proj is None else self.proj_bn(self.proj(x))
        return nnx.relu(y + shortcut)


class ResNet18Encoder(nnx.Module):
    """ResNet-18 without its classifier: images ``(N, H, W, C)`` to features ``(N, 512)``.

    Stem ``conv7x7/2 -> BN -> ReLU -> max-pool 3/2`` (``small_inputs=False``, torchvision's
    ResNet-18) or ``conv3x3/1 -> BN -> ReLU`` (``small_inputs=True``, the CIFAR variant for
    32 x 32 images); then four stages of two :class:`BasicBlock` (64, 128, 256, 512 channels,
    strides 1, 2, 2, 2) and global average pooling. Uses batch norm: call ``model.train()`` /
    ``model.eval()`` to switch between batch statistics and running averages.

    Args:
      in_channels: image channels.
      small_inputs: the CIFAR stem instead of the ImageNet one.
      rngs: the random streams.
    """

    stage_features = (64, 128, 256, 512)

    def __init__(self, in_channels: int = 3, *, small_inputs: bool = False, rngs: nnx.Rngs):
        self.in_channels = int(in_channels)
        self.small_inputs = bool(small_inputs)
        if self.small_inputs:
            self.stem = nnx.Conv(self.in_channels, 64, (3, 3), padding=1, use_bias=False, rngs=rngs)
        else:
            self.stem = nnx.Conv(
                self.in_channels, 64, (7, 7), strides=2, padding=3, use_bias=False, rngs=rngs
            )
        self.stem_bn = _batch_norm(64, rngs)
        blocks, width = [], 64
        for i, features in enumerate(self.stage_features):
            blocks.append(BasicBlock(width, features, 1 if i == 0 else 2, rngs=rngs))
            blocks.append(BasicBlock(features, features, 1, rngs=rngs))
            width = features
        self.blocks = nnx.List(blocks)
        self.out_features = width

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(
                f"ResNet18Encoder expects images (N, H, W, {self.in_channels}); got {x.shape}."
            )
        x = nnx.relu(self.stem_bn(self.stem(x)))
        if not self.small_inputs:
            x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for block in self.blocks:
            x = block(x)
        return jnp.mean(x, axis=(1, 2))


def resnet18_hps(
    num_tasks: int = 40,
    num_classes: int = 2,
    *,
    in_channels: int = 3,
    small_inputs: bool = False,
    rngs: nnx.Rngs,
) -> MultiTaskModel:
    """ResNet-18 shared by T linear heads: the CelebA model of Sener & Koltun (NeurIPS 2018).

    ``model(x)`` takes images ``(N, H, W, in_channels)`` (CelebA at 64 x 64 in the paper) and
    returns T logit arrays ``(N, num_classes)`` (40 binary attributes by default).

    Args:
      num_tasks: T.
      num_classes: classes per task.
      in_channels: image channels.
      small_inputs: the 3 x 3 stem without max-pooling (for 32 x 32 images).
      rngs: the random streams (``nnx.Rngs(seed)``).

    Returns:
      A :class:`MultiTaskModel`: :class:`ResNet18Encoder` and T stacked ``nnx.Linear(512, C)``.
    """
    encoder = ResNet18Encoder(in_channels, small_inputs=small_inputs, rngs=rngs)
    width = encoder.out_features
    heads = TaskHeads(lambda r: nnx.Linear(width, int(num_classes), rngs=r), num_tasks, rngs=rngs)
    return MultiTaskModel(encoder, heads)
