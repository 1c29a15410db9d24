"""Task kinds: what a kind of task knows, in one class each.

A kind holds, for every task of that kind: its training loss, its evaluation statistics (summable
over batches, computed inside the jitted evaluation step), their finalisation into metrics on the
host, each metric's direction of improvement (which Δm reads), its output size and random
targets of the right shape (for synthetic stand-in data).

=============== ================================ ================================================
kind            target                           metrics (better)
=============== ================================ ================================================
classification  int ``(N,)``, ``-1`` = ignore    ``accuracy`` (higher)
segmentation    int ``(N, H, W)``, ``-1`` = ign. ``miou``, ``pixel_acc`` (higher)
depth           ``(N, H, W, 1)``, ``0`` = none   ``abs_err``, ``rel_err`` (lower)
normal          ``(N, H, W, 3)``, ``0`` = inval. ``mean_angle``, ``median_angle`` (degrees, lower);
                                                 ``within_11.25``, ``within_22.5``, ``within_30``
                                                 (higher)
regression      float ``(N,)``/``(N, D)``, NaN   ``mae`` (lower), ``rmse`` (lower, with
                = missing                        ``Regression(rmse=True)``)
=============== ================================ ================================================

``Task(name, "depth")`` looks the kind up by name (:func:`get_kind`); ``Task(name, Regression(
rmse=True))`` takes an object. A new kind is one :class:`TaskKind` subclass decorated with
:func:`register_kind`; nothing else in the trainer switches on kinds.

Every loss and statistic takes an optional per-example ``mask`` ``(N,)`` (False: ignore the
example, e.g. the padding of a short evaluation batch) on top of the kind's own invalid entries,
and a batch with no valid entry gives a loss of 0 and NaN metrics, never ``0 / 0``. The dense
losses follow LibMTL's NYUv2 setup (Liu et al., "End-to-End Multi-Task Learning with Attention",
CVPR 2019).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = [
    "Classification",
    "Depth",
    "Normal",
    "Regression",
    "Segmentation",
    "TaskKind",
    "cross_entropy",
    "depth_l1",
    "get_kind",
    "kind_names",
    "l1",
    "normal_cosine",
    "register_kind",
]

# The median angle comes from a histogram: 0.05 degree bins bound its error by 0.05 degrees.
ANGLE_BINS = 3600


def _example_mask(mask: jax.Array | None, like: jax.Array) -> jax.Array:
    """``mask`` ``(N,)`` broadcast against ``like`` ``(N, ...)`` (all True when ``None``)."""
    if mask is None:
        return jnp.ones(like.shape, bool)
    mask = jnp.asarray(mask, bool)
    return jnp.broadcast_to(mask.reshape(mask.shape + (1,) * (like.ndim - 1)), like.shape)


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    mask = mask.astype(values.dtype)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def _ratio(num: Any, den: Any) -> float:
    den = float(den)
    return float(num) / den if den > 0 else float("nan")


def _unit(x: jax.Array) -> jax.Array:
    norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
    return x / jnp.where(norm > 0, norm, 1.0)  # a zero prediction stays zero instead of NaN


# --- losses shared by several kinds -------------------------------------------------------------


def cross_entropy(logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean softmax cross-entropy over entries whose label is not negative (``-1`` = ignore).

    Args:
      logits: ``(N, ..., C)`` unnormalised scores.
      labels: ``(N, ...)`` integer labels in ``[0, C)``, or a negative value to ignore an entry.
      mask: optional ``(N,)`` bools; False ignores the whole example.

    Returns:
      The scalar mean loss over the labelled entries (0 when none is labelled).
    """
    valid = (labels >= 0) & _example_mask(mask, labels)
    per_entry = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), jnp.where(valid, labels, 0)
    )
    return _masked_mean(per_entry, valid)


def depth_l1(prediction: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean absolute depth error over pixels with a measurement (target != 0).

    Args:
      prediction: ``(N, H, W, 1)`` predicted depth.
      target: ``(N, H, W, 1)`` true depth, 0 where there is no measurement.
      mask: optional ``(N,)`` bools; False ignores the whole example.
    """
    prediction, target = prediction.astype(jnp.float32), target.astype(jnp.float32)
    valid = (target != 0) & _example_mask(mask, target)
    return _masked_mean(jnp.abs(prediction - target), valid)


def normal_cosine(
    prediction: jax.Array, target: jax.Array, mask: jax.Array | None = None
) -> jax.Array:
    """``1 - cos(prediction, target)`` averaged over pixels with a non-zero true normal.

    Args:
      prediction: ``(N, H, W, 3)`` predicted normals (normalised here).
      target: ``(N, H, W, 3)`` true unit normals, the zero vector where invalid.
      mask: optional ``(N,)`` bools; False ignores the whole example.
    """
    prediction, target = prediction.astype(jnp.float32), target.astype(jnp.float32)
    valid = jnp.any(target != 0, axis=-1)
    valid = valid & _example_mask(mask, valid)
    cos = jnp.sum(_unit(prediction) * target, axis=-1)
    return _masked_mean(1.0 - cos, valid)


def _regression_pair(prediction: jax.Array, target: jax.Array) -> tuple[jax.Array, jax.Array]:
    prediction, target = prediction.astype(jnp.float32), target.astype(jnp.float32)
    if prediction.shape != target.shape:
        if prediction.size != target.size:
            raise ValueError(
                f"a regression output of shape {prediction.shape} does not match its target of "
                f"shape {target.shape}: give the task num_classes = the target's size per example "
                "(the model's output size)."
            )
        prediction = prediction.reshape(target.shape)  # (N, 1) against (N,)
    return prediction, target


def l1(prediction: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean absolute error over target entries that are not NaN (NaN = missing).

    Args:
      prediction: ``(N,)``, ``(N, 1)`` or ``(N, D)`` predictions.
      target: ``(N,)`` or ``(N, D)`` float targets, NaN where missing.
      mask: optional ``(N,)`` bools; False ignores the whole example.
    """
    prediction, target = _regression_pair(prediction, target)
    valid = ~jnp.isnan(target) & _example_mask(mask, target)
    return _masked_mean(jnp.abs(prediction - jnp.where(valid, target, 0.0)), valid)


# --- the kinds ----------------------------------------------------------------------------------


class TaskKind:
    """The behaviour of one kind of task (subclass it and decorate with :func:`register_kind`).

    Class attributes:
      name: the kind's name (``Task(name, kind="<name>")``).
      in_label_block: targets of this kind can be columns of an integer ``"labels"`` block
        ``(N, T)`` (classification) instead of living under the task's own batch key.

    A kind compares equal to its name (``Task("a").kind == "classification"``), so code that
    compares kinds to strings keeps working.
    """

    name: ClassVar[str] = ""
    in_label_block: ClassVar[bool] = False

    def directions(self) -> dict[str, bool]:
        """``{metric: higher is better}``, in the order :meth:`finalize` reports the metrics."""
        raise NotImplementedError

    def output_size(self, num_classes: int | None) -> int | None:
        """The size of the model's last axis for this task (``None``: not determined)."""
        return num_classes

    def check(self, task_name: str, num_classes: int | None) -> None:
        """Raises ``ValueError`` when ``num_classes`` does not suit this kind."""
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(
                f"task {task_name!r}: num_classes must be a positive int or None; got "
                f"{num_classes!r}."
            )

    def loss(
        self,
        output: jax.Array,
        target: jax.Array,
        *,
        num_classes: int | None = None,
        mask: jax.Array | None = None,
    ) -> jax.Array:
        """The scalar training loss of ``output`` against ``target`` (jit-able)."""
        raise NotImplementedError

    def stats(
        self,
        output: jax.Array,
        target: jax.Array,
        *,
        num_classes: int | None = None,
        mask: jax.Array | None = None,
    ) -> dict[str, jax.Array]:
        """Evaluation statistics of one batch: a dict of arrays that add up over batches."""
        raise NotImplementedError

    def finalize(
        self, stats: Mapping[str, np.ndarray], *, num_classes: int | None = None
    ) -> dict[str, float]:
        """Metrics ``{name: value}`` from statistics summed over batches (host NumPy)."""
        raise NotImplementedError

    def synthetic_target(
        self,
        rng: np.random.Generator,
        n: int,
        spatial_shape: tuple[int, ...],
        num_classes: int | None,
    ) -> np.ndarray:
        """Random targets for ``n`` examples whose inputs have ``spatial_shape`` (smoke tests)."""
        raise NotImplementedError

    def higher_is_better(self, metric: str) -> bool:
        """Whether a larger value of ``metric`` is an improvement (for Δm)."""
        directions = self.directions()
        if metric not in directions:
            raise ValueError(
                f"kind {self.name!r} has no metric {metric!r}; its metrics are {list(directions)}."
            )
        return directions[metric]

    def _key(self) -> tuple[Any, ...]:
        return (type(self), tuple(sorted(vars(self).items())))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return other == self.name
        if isinstance(other, TaskKind):
            return self._key() == other._key()
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in sorted(vars(self).items()))
        return f"{type(self).__name__}({params})"


_KINDS: dict[str, TaskKind] = {}


def register_kind(cls: type[TaskKind]) -> type[TaskKind]:
    """Class decorator: registers ``cls()`` under ``cls.name`` (``Task(name, "<name>")``).

    Raises:
      ValueError: no name, or the name belongs to another class.
    """
    if not (isinstance(cls, type) and issubclass(cls, TaskKind)) or not cls.name:
        raise ValueError(f"register_kind takes a TaskKind subclass with a name; got {cls!r}.")
    existing = _KINDS.get(cls.name)
    if existing is not None and type(existing).__qualname__ != cls.__qualname__:
        raise ValueError(f"task kind {cls.name!r} is already registered ({type(existing)}).")
    _KINDS[cls.name] = cls()
    return cls


def kind_names() -> tuple[str, ...]:
    """The registered kind names."""
    return tuple(_KINDS)


def get_kind(kind: str | TaskKind | type[TaskKind]) -> TaskKind:
    """The kind object of ``kind``: a registered name, a :class:`TaskKind` (returned as is) or a
    subclass (instantiated with its defaults).

    Raises:
      ValueError: an unknown name or an object that is not a kind.
    """
    if isinstance(kind, TaskKind):
        return kind
    if isinstance(kind, type) and issubclass(kind, TaskKind):
        return kind()
    if isinstance(kind, str):
        if kind in _KINDS:
            return _KINDS[kind]
        raise ValueError(
            f"unknown task kind {kind!r}; choose from {kind_names()} or pass a TaskKind object "
            "(new kinds: subclass mtlx.training.TaskKind, decorate with register_kind)."
        )
    raise ValueError(
        f"a task kind is a name {kind_names()} or a TaskKind object; got {type(kind).__name__}."
    )


@register_kind
class Classification(TaskKind):
    """Logits ``(N, C)`` against integer labels ``(N,)`` (``-1`` = ignore): cross-entropy, accuracy."""

    name = "classification"
    in_label_block = True

    def directions(self) -> dict[str, bool]:
        return {"accuracy": True}

    def loss(self, output, target, *, num_classes=None, mask=None):
        return cross_entropy(output, target, mask)

    def stats(self, output, target, *, num_classes=None, mask=None):
        valid = (target >= 0) & _example_mask(mask, target)
        correct = (jnp.argmax(output, axis=-1) == target) & valid
        return {
            "correct": jnp.sum(correct, dtype=jnp.int32),
            "count": jnp.sum(valid, dtype=jnp.int32),
        }

    def finalize(self, stats, *, num_classes=None):
        return {"accuracy": _ratio(stats["correct"], stats["count"])}

    def synthetic_target(self, rng, n, spatial_shape, num_classes):
        return rng.integers(0, num_classes or 2, n).astype(np.int32)


@register_kind
class Segmentation(TaskKind):
    """Per-pixel logits ``(N, H, W, C)`` against labels ``(N, H, W)`` (``-1`` = ignore).

    Metrics from the dataset-level confusion matrix: mean IoU over the classes present in labels
    or predictions, and pixel accuracy.
    """

    name = "segmentation"

    def directions(self) -> dict[str, bool]:
        return {"miou": True, "pixel_acc": True}

    def loss(self, output, target, *, num_classes=None, mask=None):
        return cross_entropy(output, target, mask)

    def stats(self, output, target, *, num_classes=None, mask=None):
        c = int(num_classes or output.shape[-1])
        valid = (target >= 0) & (target < c) & _example_mask(mask, target)
        pred = jnp.argmax(output, axis=-1)
        index = jnp.where(valid, target * c + pred, c * c)
        counts = jnp.bincount(index.ravel(), length=c * c + 1)[:-1]
        return {"confusion": counts.reshape(c, c).astype(jnp.int32)}

    def finalize(self, stats, *, num_classes=None):
        conf = np.asarray(stats["confusion"]).astype(np.float64)
        tp = np.diag(conf)
        union = conf.sum(0) + conf.sum(1) - tp
        present = union > 0  # classes absent from both labels and predictions are skipped
        miou = float(np.mean(tp[present] / union[present])) if present.any() else float("nan")
        return {"miou": miou, "pixel_acc": _ratio(tp.sum(), conf.sum())}

    def synthetic_target(self, rng, n, spatial_shape, num_classes):
        hw = tuple(spatial_shape[:2])
        labels = rng.integers(0, num_classes or 2, (n, *hw)).astype(np.int32)
        return np.where(rng.random((n, *hw)) < 0.1, -1, labels).astype(np.int32)  # some ignored


@register_kind
class Depth(TaskKind):
    """Depth ``(N, H, W, 1)``, 0 where there is no measurement: L1 loss, absolute/relative error."""

    name = "depth"

    def directions(self) -> dict[str, bool]:
        return {"abs_err": False, "rel_err": False}

    def output_size(self, num_classes):
        return 1

    def loss(self, output, target, *, num_classes=None, mask=None):
        return depth_l1(output, target, mask)

    def stats(self, output, target, *, num_classes=None, mask=None):
        output, target = output.astype(jnp.float32), target.astype(jnp.float32)
        valid = (target != 0) & _example_mask(mask, target)
        err = jnp.where(valid, jnp.abs(output - target), 0.0)
        rel = err / jnp.where(valid, jnp.abs(target), 1.0)
        return {"abs": jnp.sum(err), "rel": jnp.sum(rel), "count": jnp.sum(valid, dtype=jnp.int32)}

    def finalize(self, stats, *, num_classes=None):
        return {
            "abs_err": _ratio(stats["abs"], stats["count"]),
            "rel_err": _ratio(stats["rel"], stats["count"]),
        }

    def synthetic_target(self, rng, n, spatial_shape, num_classes):
        return (rng.random((n, *tuple(spatial_shape[:2]), 1)) * 5.0 + 0.1).astype(np.float32)


@register_kind
class Normal(TaskKind):
    """Surface normals ``(N, H, W, 3)``, the zero vector where invalid: ``1 - cos`` loss, angles."""

    name = "normal"

    def directions(self) -> dict[str, bool]:
        return {
            "mean_angle": False,
            "median_angle": False,
            "within_11.25": True,
            "within_22.5": True,
            "within_30": True,
        }

    def output_size(self, num_classes):
        return 3

    def loss(self, output, target, *, num_classes=None, mask=None):
        return normal_cosine(output, target, mask)

    def stats(self, output, target, *, num_classes=None, mask=None):
        output, target = output.astype(jnp.float32), target.astype(jnp.float32)
        valid = jnp.any(target != 0, axis=-1)
        valid = valid & _example_mask(mask, valid)
        cos = jnp.clip(jnp.sum(_unit(output) * target, axis=-1), -1.0, 1.0)
        angle = jnp.degrees(jnp.arccos(cos))
        bins = jnp.clip((angle / 180.0 * ANGLE_BINS).astype(jnp.int32), 0, ANGLE_BINS - 1)
        bins = jnp.where(valid, bins, ANGLE_BINS)
        hist = jnp.bincount(bins.ravel(), length=ANGLE_BINS + 1)[:-1].astype(jnp.int32)
        return {
            "angle_sum": jnp.sum(jnp.where(valid, angle, 0.0)),
            "within": jnp.stack(
                [jnp.sum(valid & (angle < a), dtype=jnp.int32) for a in (11.25, 22.5, 30.0)]
            ),
            "hist": hist,
        }

    def finalize(self, stats, *, num_classes=None):
        hist = np.asarray(stats["hist"]).astype(np.float64)
        count = hist.sum()
        median = float("nan")
        if count > 0:
            cdf = np.cumsum(hist) / count
            b = int(np.searchsorted(cdf, 0.5))
            median = (b + 0.5) * 180.0 / ANGLE_BINS  # bin centre
        within = np.asarray(stats["within"])
        return {
            "mean_angle": _ratio(stats["angle_sum"], count),
            "median_angle": median,
            "within_11.25": _ratio(within[0], count),
            "within_22.5": _ratio(within[1], count),
            "within_30": _ratio(within[2], count),
        }

    def synthetic_target(self, rng, n, spatial_shape, num_classes):
        normal = rng.standard_normal((n, *tuple(spatial_shape[:2]), 3)).astype(np.float32)
        return normal / np.linalg.norm(normal, axis=-1, keepdims=True)


@register_kind
class Regression(TaskKind):
    """A scalar or vector float target ``(N,)`` / ``(N, D)``, NaN where missing: L1 loss, MAE.

    The task's ``num_classes`` is the output size ``D`` (default 1: a ``(N, 1)`` or ``(N,)``
    output for an ``(N,)`` target).

    Args:
      rmse: also report the root mean squared error (``"rmse"``, lower is better).
    """

    name = "regression"

    def __init__(self, rmse: bool = False):
        self.rmse = bool(rmse)

    def directions(self) -> dict[str, bool]:
        return {"mae": False, "rmse": False} if self.rmse else {"mae": False}

    def output_size(self, num_classes):
        return num_classes or 1

    def loss(self, output, target, *, num_classes=None, mask=None):
        return l1(output, target, mask)

    def stats(self, output, target, *, num_classes=None, mask=None):
        output, target = _regression_pair(output, target)
        valid = ~jnp.isnan(target) & _example_mask(mask, target)
        err = jnp.where(valid, output - jnp.where(valid, target, 0.0), 0.0)
        return {
            "abs": jnp.sum(jnp.abs(err)),
            "sq": jnp.sum(err * err),
            "count": jnp.sum(valid, dtype=jnp.int32),
        }

    def finalize(self, stats, *, num_classes=None):
        out = {"mae": _ratio(stats["abs"], stats["count"])}
        if self.rmse:
            out["rmse"] = float(np.sqrt(_ratio(stats["sq"], stats["count"])))
        return out

    def synthetic_target(self, rng, n, spatial_shape, num_classes):
        shape = (n,) if (num_classes or 1) == 1 else (n, int(num_classes))
        return rng.standard_normal(shape).astype(np.float32)
