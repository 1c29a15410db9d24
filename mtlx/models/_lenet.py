"""The LeNet of Sener & Koltun's Multi-MNIST experiments, as a shared encoder and T heads."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from mtlx.models._hps import MultiTaskModel, TaskHeads


class LeNetEncoder(nnx.Module):
    """``conv5(10) -> max-pool 2 -> ReLU -> conv5(20) -> max-pool 2 -> ReLU -> Linear(50) -> ReLU``.

    The shared part of MultiLeNet (Sener & Koltun, "Multi-Task Learning as Multi-Objective
    Optimization", NeurIPS 2018; ``MultiLeNetR`` in their code). Images of any size are first
    resized (bilinear, antialiased) to ``input_size``, as the paper resizes its 36 x 36 Multi-MNIST
    images to 28 x 28; so the same network takes (N, 28, 28, C), (N, 36, 36, C) and the 8 x 16
    Multi-Digits images.

    .. note::
      The reference applies ``Dropout2d`` after the second convolution; it is left out so that the
      forward pass is deterministic (a training step is then a pure function of the parameters).

    Args:
      in_channels: image channels (1 for (Fashion-)MNIST).
      input_size: the (height, width) the convolutions see; 28 x 28 gives the reference's 320
        flattened features.
      features: the output width (50 in the reference).
      rngs: the random streams.
    """

    def __init__(
        self,
        in_channels: int = 1,
        *,
        input_size: Sequence[int] = (28, 28),
        features: int = 50,
        rngs: nnx.Rngs,
    ):
        height, width = map(int, input_size)
        if height < 16 or width < 16:  # two VALID 5 x 5 convolutions and two 2 x 2 pools
            raise ValueError(f"input_size must be at least 16 x 16; got {tuple(input_size)}.")
        self.in_channels = int(in_channels)
        self.input_size = (height, width)
        self.out_features = int(features)
        self.conv1 = nnx.Conv(self.in_channels, 10, (5, 5), padding="VALID", rngs=rngs)
        self.conv2 = nnx.Conv(10, 20, (5, 5), padding="VALID", rngs=rngs)
        flat = 20 * (((height - 4) // 2 - 4) // 2) * (((width - 4) // 2 - 4) // 2)
        self.fc = nnx.Linear(flat, self.out_features, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(
                f"LeNetEncoder expects images (N, H, W, {self.in_channels}); got shape {x.shape}."
            )
        if x.shape[1:3] != self.input_size:
            shape = (x.shape[0], *self.input_size, x.shape[3])
            x = jax.image.resize(x, shape, method="bilinear").astype(x.dtype)
        x = nnx.relu(nnx.max_pool(self.conv1(x), (2, 2), strides=(2, 2)))
        x = nnx.relu(nnx.max_pool(self.conv2(x), (2, 2), strides=(2, 2)))
        return nnx.relu(self.fc(jnp.reshape(x, (x.shape[0], -1))))


class LeNetHead(nnx.Module):
    """``Linear(50) -> ReLU -> Linear(num_classes)``: MultiLeNet's task head (``MultiLeNetO``),
    returning logits (the reference returns log-softmax; here the loss applies it) and without its
    dropout.

    Args:
      in_features: the encoder's output width.
      num_classes: the task's classes.
      hidden: the hidden width (50 in the reference).
      rngs: the random streams.
    """

    def __init__(self, in_features: int, num_classes: int, hidden: int = 50, *, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(int(in_features), int(hidden), rngs=rngs)
        self.fc2 = nnx.Linear(int(hidden), int(num_classes), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(nnx.relu(self.fc1(x)))


def lenet_hps(
    num_tasks: int = 2,
    num_classes: int | Sequence[int] = 10,
    *,
    in_channels: int = 1,
    rngs: nnx.Rngs,
) -> MultiTaskModel:
    """MultiLeNet: the Multi-MNIST / Multi-Fashion+MNIST model of Sener & Koltun (NeurIPS 2018).

    ``model(x)`` takes images ``(N, H, W, in_channels)`` (resized to 28 x 28 inside; e.g. 36 x 36
    Multi-MNIST or 8 x 16 Multi-Digits) and returns ``num_tasks`` logit arrays ``(N, num_classes)``.

    Args:
      num_tasks: T (2 for the left / right digit).
      num_classes: classes per task, or one size per task (``(10, 10, 1)``: two classifiers and
        a regression; the stacked heads are as wide as the largest).
      in_channels: image channels.
      rngs: the random streams (``nnx.Rngs(seed)``).

    Returns:
      A :class:`MultiTaskModel`: :class:`LeNetEncoder` and T stacked :class:`LeNetHead`.
    """
    encoder = LeNetEncoder(in_channels, rngs=rngs)
    width = encoder.out_features
    heads = TaskHeads.sized(
        lambda size, r: LeNetHead(width, size, rngs=r), num_classes, num_tasks, rngs=rngs
    )
    return MultiTaskModel(encoder, heads)
