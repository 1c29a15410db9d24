"""SegNet (Badrinarayanan et al., TPAMI 2017) as the shared encoder-decoder of dense tasks, in the
multi-task form of Liu et al. (MTAN, CVPR 2019) used by LibMTL for NYUv2 and Cityscapes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from mtlx.models._hps import MultiTaskModel, PerTaskHeads

NYUV2_TASKS = {"segmentation": 13, "depth": 1, "normal": 3}
_UNIT_NORM_TASKS = ("normal", "normals", "surface_normal", "surface_normals")


def max_pool_with_argmax(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """2 x 2 max-pooling that also returns where each maximum was, for :func:`max_unpool`.

    Args:
      x: ``(N, H, W, C)`` with even ``H`` and ``W``.

    Returns:
      ``(pooled (N, H/2, W/2, C), mask (N, H/2, W/2, C, 4))``, the mask one-hot on the window
      position of the maximum (the first one on ties).
    """
    n, h, w, c = x.shape
    windows = x.reshape(n, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 5, 2, 4)
    windows = windows.reshape(n, h // 2, w // 2, c, 4)
    mask = jax.nn.one_hot(jnp.argmax(windows, axis=-1), 4, dtype=x.dtype)
    return jnp.max(windows, axis=-1), jax.lax.stop_gradient(mask)


def max_unpool(y: jax.Array, mask: jax.Array) -> jax.Array:
    """The inverse of :func:`max_pool_with_argmax`: each value back at its maximum, zeros elsewhere
    (PyTorch's ``MaxUnpool2d`` with the pooling indices).

    Args:
      y: ``(N, h, w, C)``.
      mask: ``(N, h, w, C, 4)`` from :func:`max_pool_with_argmax`.

    Returns:
      ``(N, 2h, 2w, C)``.
    """
    n, h, w, c = y.shape
    windows = (y[..., None] * mask).reshape(n, h, w, c, 2, 2).transpose(0, 1, 4, 2, 5, 3)
    return windows.reshape(n, 2 * h, 2 * w, c)


class ConvBNReLU(nnx.Module):
    """``conv3x3 -> BN -> ReLU`` (MTAN's ``conv_layer``)."""

    def __init__(self, in_features: int, features: int, *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(in_features, features, (3, 3), padding=1, rngs=rngs)
        self.bn = nnx.BatchNorm(features, momentum=0.9, epsilon=1e-5, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return nnx.relu(self.bn(self.conv(x)))


def _stage(widths: Sequence[int], rngs: nnx.Rngs) -> nnx.List:
    return nnx.List([ConvBNReLU(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])])


class SegNetEncoder(nnx.Module):
    """The SegNet encoder-decoder: images ``(N, H, W, C)`` to features ``(N, H, W, filters[0])``.

    Five encoder stages (2, 2, 3, 3, 3 ``conv3x3-BN-ReLU`` layers with ``filters`` channels), each
    followed by 2 x 2 max-pooling that remembers its argmax; five mirrored decoder stages that
    max-unpool with those positions. ``H`` and ``W`` must be multiples of ``2 ** len(filters)``
    (32: NYUv2 at 288 x 384, Cityscapes at 128 x 256). Uses batch norm: ``model.train()`` /
    ``model.eval()``.

    Args:
      in_channels: image channels.
      filters: the channels of the five stages (MTAN / LibMTL: 64, 128, 256, 512, 512).
      rngs: the random streams.
    """

    def __init__(
        self,
        in_channels: int = 3,
        *,
        filters: Sequence[int] = (64, 128, 256, 512, 512),
        rngs: nnx.Rngs,
    ):
        filters = tuple(int(f) for f in filters)
        if not filters or min(filters) < 1:
            raise ValueError(f"filters must be positive channel counts; got {filters}.")
        self.in_channels = int(in_channels)
        self.filters = filters
        self.out_features = filters[0]
        depth = [2, 2] + [3] * (len(filters) - 2) if len(filters) > 2 else [2] * len(filters)
        inputs = (self.in_channels, *filters[:-1])
        self.down = nnx.List(
            [_stage((a,) + (b,) * d, rngs) for a, b, d in zip(inputs, filters, depth)]
        )
        # Decoder stage i mirrors encoder stage i: its first layer maps filters[i] channels to
        # filters[i - 1] (filters[0] for i = 0), as in MTAN's decoder_block / conv_block_dec.
        outputs = (filters[0], *filters[:-1])
        self.up = nnx.List(
            [_stage((b,) + (a,) * d, rngs) for a, b, d in zip(outputs, filters, depth)]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        multiple = 2 ** len(self.filters)
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(
                f"SegNetEncoder expects images (N, H, W, {self.in_channels}); got {x.shape}."
            )
        if x.shape[1] % multiple or x.shape[2] % multiple:
            raise ValueError(
                f"SegNetEncoder needs H and W divisible by {multiple}; got {x.shape[1:3]}."
            )
        masks = []
        for stage in self.down:
            for layer in stage:
                x = layer(x)
            x, mask = max_pool_with_argmax(x)
            masks.append(mask)
        for stage, mask in zip(reversed(self.up), reversed(masks)):
            x = max_unpool(x, mask)
            for layer in stage:
                x = layer(x)
        return x


class DenseHead(nnx.Module):
    """``conv3x3 -> conv1x1``: a per-pixel task head (MTAN's ``pred_task``).

    Args:
      in_features: the decoder's channels.
      out_features: the task's channels (classes for segmentation, 1 for depth, 3 for normals).
      unit_norm: L2-normalise each pixel's output (surface normals).
      rngs: the random streams.
    """

    def __init__(
        self, in_features: int, out_features: int, *, unit_norm: bool = False, rngs: nnx.Rngs
    ):
        self.conv = nnx.Conv(in_features, in_features, (3, 3), padding=1, rngs=rngs)
        self.out = nnx.Conv(in_features, int(out_features), (1, 1), rngs=rngs)
        self.unit_norm = bool(unit_norm)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.out(self.conv(x))
        if self.unit_norm:
            # The epsilon keeps an all-zero pixel finite (and its gradient) instead of 0 / 0.
            y = y * jax.lax.rsqrt(jnp.sum(y * y, axis=-1, keepdims=True) + 1e-12)
        return y


def segnet_mtl(
    tasks: Mapping[str, int] = NYUV2_TASKS,
    *,
    in_channels: int = 3,
    filters: Sequence[int] = (64, 128, 256, 512, 512),
    rngs: nnx.Rngs,
) -> MultiTaskModel:
    """SegNet with one dense head per task: the NYUv2 / Cityscapes model of MTAN and LibMTL.

    ``model(x)`` takes images ``(N, H, W, in_channels)`` and returns, in the order of ``tasks``,
    per-pixel outputs ``(N, H, W, channels)``: logits for segmentation, raw values for depth,
    unit vectors for a task named ``"normal"`` (MTAN normalises inside the model).

    .. note::
      The heads have different output sizes, so they are separate modules (:class:`PerTaskHeads`)
      whose parameters have no task axis; :func:`is_shared` still marks them task-specific by
      path. Use :func:`mtlx.value_and_jacobian_through_features` for them.

    Args:
      tasks: ``{task name: output channels}`` (NYUv2: 13 classes, depth 1, normals 3).
      in_channels: image channels.
      filters: the encoder-decoder's stage widths (smaller ones for quick tests).
      rngs: the random streams (``nnx.Rngs(seed)``).

    Returns:
      A :class:`MultiTaskModel`: :class:`SegNetEncoder` and a :class:`DenseHead` per task.
    """
    if not tasks:
        raise ValueError("segnet_mtl needs at least one task.")
    encoder = SegNetEncoder(in_channels, filters=filters, rngs=rngs)
    heads = {
        name: DenseHead(
            encoder.out_features, channels, unit_norm=name in _UNIT_NORM_TASKS, rngs=rngs
        )
        for name, channels in tasks.items()
    }
    return MultiTaskModel(encoder, PerTaskHeads(heads))
