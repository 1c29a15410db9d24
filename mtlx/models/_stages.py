"""Backbones as sequences of stages: what the architectures beyond hard sharing are built from.

Cross-stitch, NDDR-CNN, MTAN, PLE and Learning-to-Branch act *between* the layers of a backbone
(mix task columns, attend to a stage's features, route a level's experts), so they need the
backbone cut into stages. A :class:`BackboneSpec` names a backbone and builds one stage at a time;
the stages in order compute exactly the existing encoders:

* ``"mlp"``: one stage per hidden layer, ``Linear -> ReLU`` (flattening first), as :class:`MLP`;
* ``"lenet"``: ``conv5(10) -> pool -> ReLU``, ``conv5(20) -> pool -> ReLU``, ``Linear(50) ->
  ReLU``, as :class:`LeNetEncoder` (inputs resized to 28 x 28 inside the first stage);
* ``"resnet18"``: stem and stage 1 (two :class:`BasicBlock`), then stages 2, 3, 4 (two blocks
  each), as :class:`ResNet18Encoder`, whose global average pooling is the spec's ``readout``.

Every stage module returns ``(u, p)``: an intermediate feature ``u`` and the stage output ``p``
(``u`` is the first block's output for ResNet stages, as LibMTL's MTAN attends to
``layer[:-1]``; ``u is p`` for single-layer stages). This file is internal: the architectures'
factories take a backbone *name*.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from mtlx.models._hps import TaskHeads
from mtlx.models._lenet import LeNetHead
from mtlx.models._resnet import BasicBlock, _batch_norm

BACKBONES = ("mlp", "lenet", "resnet18")


class DenseStage(nnx.Module):
    """``Linear -> ReLU`` (flattening the input first when ``flatten``)."""

    def __init__(self, in_features: int, features: int, *, flatten: bool, rngs: nnx.Rngs):
        self.in_features = int(in_features)
        self.flatten = bool(flatten)
        self.linear = nnx.Linear(self.in_features, int(features), rngs=rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        if self.flatten:
            x = jnp.reshape(x, (x.shape[0], -1))
            if x.shape[1] != self.in_features:
                raise ValueError(
                    f"expected {self.in_features} features per example after flattening; got "
                    f"{x.shape[1]}."
                )
        y = nnx.relu(self.linear(x))
        return y, y


class ConvPoolStage(nnx.Module):
    """``conv5 (VALID) -> max-pool 2 -> ReLU``, resizing the input to ``resize_to`` first (a
    stage of :class:`LeNetEncoder`)."""

    def __init__(
        self,
        in_channels: int,
        features: int,
        *,
        resize_to: Sequence[int] | None = None,
        rngs: nnx.Rngs,
    ):
        self.in_channels = int(in_channels)
        self.resize_to = None if resize_to is None else tuple(map(int, resize_to))
        self.conv = nnx.Conv(self.in_channels, int(features), (5, 5), padding="VALID", rngs=rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(f"expected images (N, H, W, {self.in_channels}); got {x.shape}.")
        if self.resize_to is not None and x.shape[1:3] != self.resize_to:
            shape = (x.shape[0], *self.resize_to, x.shape[3])
            x = jax.image.resize(x, shape, method="bilinear").astype(x.dtype)
        y = nnx.relu(nnx.max_pool(self.conv(x), (2, 2), strides=(2, 2)))
        return y, y


class ResNetStage(nnx.Module):
    """Two :class:`BasicBlock` (the first strided), after ResNet-18's stem when ``stem``."""

    def __init__(
        self,
        in_features: int,
        features: int,
        stride: int,
        *,
        stem: bool = False,
        small_inputs: bool = False,
        rngs: nnx.Rngs,
    ):
        self.small_inputs = bool(small_inputs)
        if stem:
            self.in_channels = int(in_features)
            if self.small_inputs:
                self.stem = nnx.Conv(
                    self.in_channels, 64, (3, 3), padding=1, use_bias=False, rngs=rngs
                )
            else:
                self.stem = nnx.Conv(
                    self.in_channels, 64, (7, 7), strides=2, padding=3, use_bias=False, rngs=rngs
                )
            self.stem_bn = _batch_norm(64, rngs)
            in_features = 64
        else:
            self.in_channels = None
            self.stem = self.stem_bn = None
        self.block1 = BasicBlock(int(in_features), int(features), int(stride), rngs=rngs)
        self.block2 = BasicBlock(int(features), int(features), 1, rngs=rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        if self.stem is not None:
            if x.ndim != 4 or x.shape[-1] != self.in_channels:
                raise ValueError(f"expected images (N, H, W, {self.in_channels}); got {x.shape}.")
            x = nnx.relu(self.stem_bn(self.stem(x)))
            if not self.small_inputs:
                x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        u = self.block1(x)
        return u, self.block2(u)


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """A backbone by name and size, built one stage at a time.

    Attributes:
      name: ``"mlp"``, ``"lenet"`` or ``"resnet18"``.
      in_features: the flattened input size (the MLP's input; the gates' input for MoE models).
      in_channels: image channels (LeNet, ResNet-18).
      hidden: the MLP's hidden widths (one stage each).
      small_inputs: ResNet-18's CIFAR stem (3 x 3, no max-pool) instead of the ImageNet one.
    """

    name: str
    in_features: int | None = None
    in_channels: int = 1
    hidden: tuple[int, ...] = (64, 64)
    small_inputs: bool = False

    def __post_init__(self):
        if self.name not in BACKBONES:
            raise ValueError(f"unknown backbone {self.name!r}; one of {BACKBONES}.")
        if self.name == "mlp":
            if self.in_features is None or int(self.in_features) < 1 or not self.hidden:
                raise ValueError(
                    "the mlp backbone needs in_features and at least one hidden width; got "
                    f"in_features={self.in_features}, hidden={self.hidden}."
                )
            object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))

    @property
    def widths(self) -> tuple[int, ...]:
        """The feature width (channels) of every stage's output."""
        if self.name == "mlp":
            return self.hidden
        if self.name == "lenet":
            return (10, 20, 50)
        return (64, 128, 256, 512)

    @property
    def num_stages(self) -> int:
        return len(self.widths)

    @property
    def out_features(self) -> int:
        return self.widths[-1]

    def make_stage(self, k: int, rngs: nnx.Rngs) -> nnx.Module:
        """A fresh stage ``k`` (its own parameters)."""
        if self.name == "mlp":
            widths = (int(self.in_features), *self.hidden)
            return DenseStage(widths[k], widths[k + 1], flatten=k == 0, rngs=rngs)
        if self.name == "lenet":
            if k == 0:
                return ConvPoolStage(self.in_channels, 10, resize_to=(28, 28), rngs=rngs)
            if k == 1:
                return ConvPoolStage(10, 20, rngs=rngs)
            return DenseStage(320, 50, flatten=True, rngs=rngs)
        if k == 0:
            return ResNetStage(
                self.in_channels, 64, 1, stem=True, small_inputs=self.small_inputs, rngs=rngs
            )
        return ResNetStage(self.widths[k - 1], self.widths[k], 2, rngs=rngs)

    def readout(self, x: jax.Array) -> jax.Array:
        """The last stage's output to the heads' input (ResNet-18: global average pooling)."""
        return jnp.mean(x, axis=(1, 2)) if self.name == "resnet18" else x

    def example_input(self) -> jax.Array:
        """One dummy example batch ``(1, ...)`` that the first stage accepts."""
        if self.name == "mlp":
            return jnp.zeros((1, int(self.in_features)), jnp.float32)
        size = 28 if self.name == "lenet" else 32
        return jnp.zeros((1, size, size, self.in_channels), jnp.float32)

    def make_heads(
        self, out_features: int | Sequence[int], num_tasks: int, rngs: nnx.Rngs
    ) -> TaskHeads:
        """The T stacked heads the encoder of the same name gets in the HPS models (LeNet:
        :class:`LeNetHead`; MLP and ResNet-18: one ``Linear``)."""
        width = self.out_features
        if self.name == "lenet":
            return TaskHeads.sized(
                lambda size, r: LeNetHead(width, size, rngs=r), out_features, num_tasks, rngs=rngs
            )
        return TaskHeads.sized(
            lambda size, r: nnx.Linear(width, size, rngs=r), out_features, num_tasks, rngs=rngs
        )


def backbone_spec(
    backbone: str,
    *,
    in_features: int | None,
    in_channels: int,
    hidden: Sequence[int],
    small_inputs: bool = False,
) -> BackboneSpec:
    """The :class:`BackboneSpec` a factory's arguments describe."""
    return BackboneSpec(
        str(backbone),
        None if in_features is None else int(in_features),
        int(in_channels),
        tuple(int(h) for h in hidden),
        bool(small_inputs),
    )


def stack(make: Callable[[nnx.Rngs], nnx.Module], n: int, rngs: nnx.Rngs) -> nnx.Module:
    """``n`` modules from ``make(rngs)``, stacked: every variable gains a leading axis ``n`` (each
    copy initialised from its own split of the streams)."""

    @nnx.vmap(in_axes=0, out_axes=0)
    def create(r: nnx.Rngs) -> nnx.Module:
        return make(r)

    return create(rngs.split(int(n)))


def map_stacked(fn: Callable[..., Any], module: nnx.Module, *args: Any, in_axes: Any = 0) -> Any:
    """``fn(module_i, *args_i)`` for every copy ``i`` of a stacked module: outputs stacked on a
    leading axis. ``in_axes`` gives the axes of ``args`` (``None``: the same for every copy)."""
    axes = in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(args)
    return nnx.vmap(fn, in_axes=(0, *axes), out_axes=0)(module, *args)


def heads_per_task(heads: TaskHeads, features: Any) -> tuple[jax.Array, ...]:
    """Head t on task t's features (``features``' leaves have a leading task axis T): the T
    outputs, each cut to its task's output size."""
    out = map_stacked(lambda head, x: head(x), heads.head, features)
    if heads.output_sizes is None:
        return tuple(out[t] for t in range(heads.num_tasks))
    return tuple(out[t][..., :k] for t, k in enumerate(heads.output_sizes))


def flat_size(x: jax.Array) -> int:
    """Features per example of a batch ``(N, ...)``."""
    return int(math.prod(x.shape[1:]))


def stage_input_shapes(spec: BackboneSpec) -> list[tuple[int, ...]]:
    """The per-example shape of every stage's input (``len == num_stages``), by abstract
    evaluation of a throwaway backbone on :meth:`BackboneSpec.example_input` (nothing is
    computed)."""

    def run():
        x = spec.example_input()
        out = [x]
        for k in range(spec.num_stages - 1):
            stage = spec.make_stage(k, nnx.Rngs(0))
            stage.eval()
            x = stage(x)[1]
            out.append(x)
        return out

    return [tuple(o.shape[1:]) for o in jax.eval_shape(run)]


class StagedEncoder(nnx.Module):
    """A whole backbone from its stages: ``readout(stage_K(...stage_1(x)))``, the same function
    as the backbone's encoder class (:class:`MLP`, :class:`LeNetEncoder`,
    :class:`ResNet18Encoder`)."""

    def __init__(self, spec: BackboneSpec, *, rngs: nnx.Rngs):
        self.spec = spec
        self.stages = nnx.List([spec.make_stage(k, rngs) for k in range(spec.num_stages)])

    @property
    def out_features(self) -> int:
        return self.spec.out_features

    def __call__(self, x: jax.Array) -> jax.Array:
        for stage in self.stages:
            x = stage(x)[1]
        return self.spec.readout(x)
