"""Per-task evaluation metrics and Δm, the mean relative change against single-task baselines.

Metrics are accumulated over evaluation batches as summable statistics (counts, sums, a confusion
matrix, an angle histogram) computed inside the jitted evaluation step; :func:`finalize` turns the
summed statistics into numbers on the host. This gives dataset-level metrics (mIoU from the
dataset confusion matrix, not a mean of per-batch mIoUs), as LibMTL reports them.

=============== ==================================================== ===================
kind            metrics                                              better
=============== ==================================================== ===================
classification  ``accuracy``                                         higher
segmentation    ``miou``, ``pixel_acc``                              higher
depth           ``abs_err``, ``rel_err``                             lower
normal          ``mean_angle``, ``median_angle`` (degrees);          lower;
                ``within_11.25``, ``within_22.5``, ``within_30``     higher
=============== ==================================================== ===================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mtlx.training.tasks import Task

HIGHER_IS_BETTER: dict[str, bool] = {
    "accuracy": True,
    "miou": True,
    "pixel_acc": True,
    "abs_err": False,
    "rel_err": False,
    "mean_angle": False,
    "median_angle": False,
    "within_11.25": True,
    "within_22.5": True,
    "within_30": True,
}

# The median angle comes from a histogram: 0.05 degree bins bound its error by 0.05 degrees.
_ANGLE_BINS = 3600


def _classification_stats(logits: jax.Array, labels: jax.Array) -> dict[str, jax.Array]:
    valid = labels >= 0
    correct = (jnp.argmax(logits, axis=-1) == labels) & valid
    return {"correct": jnp.sum(correct, dtype=jnp.int32), "count": jnp.sum(valid, dtype=jnp.int32)}


def _segmentation_stats(
    logits: jax.Array, labels: jax.Array, num_classes: int
) -> dict[str, jax.Array]:
    valid = (labels >= 0) & (labels < num_classes)
    pred = jnp.argmax(logits, axis=-1)
    index = jnp.where(valid, labels * num_classes + pred, num_classes * num_classes)
    counts = jnp.bincount(index.ravel(), length=num_classes * num_classes + 1)[:-1]
    return {"confusion": counts.reshape(num_classes, num_classes).astype(jnp.int32)}


def _depth_stats(prediction: jax.Array, target: jax.Array) -> dict[str, jax.Array]:
    prediction, target = prediction.astype(jnp.float32), target.astype(jnp.float32)
    valid = target != 0
    err = jnp.where(valid, jnp.abs(prediction - target), 0.0)
    rel = err / jnp.where(valid, jnp.abs(target), 1.0)
    return {"abs": jnp.sum(err), "rel": jnp.sum(rel), "count": jnp.sum(valid, dtype=jnp.int32)}


def _normal_stats(prediction: jax.Array, target: jax.Array) -> dict[str, jax.Array]:
    prediction, target = prediction.astype(jnp.float32), target.astype(jnp.float32)
    valid = jnp.any(target != 0, axis=-1)
    norm = jnp.linalg.norm(prediction, axis=-1, keepdims=True)
    unit = prediction / jnp.where(norm > 0, norm, 1.0)
    cos = jnp.clip(jnp.sum(unit * target, axis=-1), -1.0, 1.0)
    angle = jnp.degrees(jnp.arccos(cos))
    bins = jnp.clip((angle / 180.0 * _ANGLE_BINS).astype(jnp.int32), 0, _ANGLE_BINS - 1)
    bins = jnp.where(valid, bins, _ANGLE_BINS)
    hist = jnp.bincount(bins.ravel(), length=_ANGLE_BINS + 1)[:-1].astype(jnp.int32)
    return {
        "angle_sum": jnp.sum(jnp.where(valid, angle, 0.0)),
        "within": jnp.stack(
            [jnp.sum(valid & (angle < a), dtype=jnp.int32) for a in (11.25, 22.5, 30.0)]
        ),
        "hist": hist,
    }


def metric_stats(
    tasks: Sequence[Task], outputs: Sequence[jax.Array], batch: Mapping[str, Any]
) -> tuple[dict[str, jax.Array], ...]:
    """Summable evaluation statistics of one batch, one dict per task (jit-able).

    Args:
      tasks: the tasks, in the order of the model's outputs.
      outputs: the model's per-task outputs.
      batch: the batch holding the targets.

    Returns:
      One dict of arrays per task; add them over batches (``jax.tree.map(operator.add, ...)``) and
      pass the sum to :func:`finalize`.
    """
    stats = []
    for i, (task, out) in enumerate(zip(tasks, outputs)):
        target = task.target(batch, i)
        if task.kind == "classification":
            stats.append(_classification_stats(out, target))
        elif task.kind == "segmentation":
            stats.append(_segmentation_stats(out, target, task.num_classes or out.shape[-1]))
        elif task.kind == "depth":
            stats.append(_depth_stats(out, target))
        else:
            stats.append(_normal_stats(out, target))
    return tuple(stats)


def _ratio(num: Any, den: Any) -> float:
    den = float(den)
    return float(num) / den if den > 0 else float("nan")


def finalize(
    tasks: Sequence[Task], stats: Sequence[Mapping[str, Any]]
) -> dict[str, dict[str, float]]:
    """Metrics from summed statistics: ``{task name: {metric name: value}}`` (host floats).

    A metric with no valid entry (e.g. no labelled pixel) is NaN, never a division error.
    """
    results: dict[str, dict[str, float]] = {}
    for task, s in zip(tasks, stats):
        s = jax.tree.map(np.asarray, dict(s))
        if task.kind == "classification":
            results[task.name] = {"accuracy": _ratio(s["correct"], s["count"])}
        elif task.kind == "segmentation":
            conf = s["confusion"].astype(np.float64)
            tp = np.diag(conf)
            union = conf.sum(0) + conf.sum(1) - tp
            present = union > 0  # classes absent from both labels and predictions are skipped
            miou = float(np.mean(tp[present] / union[present])) if present.any() else float("nan")
            results[task.name] = {"miou": miou, "pixel_acc": _ratio(tp.sum(), conf.sum())}
        elif task.kind == "depth":
            results[task.name] = {
                "abs_err": _ratio(s["abs"], s["count"]),
                "rel_err": _ratio(s["rel"], s["count"]),
            }
        else:
            hist = s["hist"].astype(np.float64)
            count = hist.sum()
            median = float("nan")
            if count > 0:
                cdf = np.cumsum(hist) / count
                b = int(np.searchsorted(cdf, 0.5))
                median = (b + 0.5) * 180.0 / _ANGLE_BINS  # bin centre
            results[task.name] = {
                "mean_angle": _ratio(s["angle_sum"], count),
                "median_angle": median,
                "within_11.25": _ratio(s["within"][0], count),
                "within_22.5": _ratio(s["within"][1], count),
                "within_30": _ratio(s["within"][2], count),
            }
    return results


def delta_m(
    results: Mapping[str, Mapping[str, float]],
    baselines: Mapping[str, Mapping[str, float]],
) -> float:
    r"""Δm (%): the mean relative improvement of every metric over its single-task baseline.

    .. math::
      \Delta m = \frac{100}{K} \sum_{k=1}^K (-1)^{l_k} \frac{M_k - B_k}{B_k}

    over the K (task, metric) pairs present in ``baselines``, with :math:`l_k = 1` when lower is
    better (Maninis et al., CVPR 2019; Vandenhende et al., TPAMI 2021).

    .. warning::
      Positive is better here (an improvement), as in LibMTL's ``improvement``. Nash-MTL, CAGrad
      and FAMO report the negation (lower is better): negate to compare with their tables.

    Args:
      results: ``{task: {metric: value}}`` of the multi-task model (from :func:`finalize`).
      baselines: ``{task: {metric: value}}`` of the single-task models; only these pairs count.

    Returns:
      Δm in percent.
    """
    terms = []
    for task, metrics in baselines.items():
        for name, base in metrics.items():
            if task not in results or name not in results[task]:
                raise ValueError(f"no result for baseline metric {task}/{name}.")
            if name not in HIGHER_IS_BETTER:
                raise ValueError(
                    f"unknown metric {name!r}: Δm needs to know whether higher is better."
                )
            if base == 0:
                raise ValueError(f"baseline {task}/{name} is 0: Δm divides by the baseline.")
            sign = 1.0 if HIGHER_IS_BETTER[name] else -1.0
            terms.append(sign * (results[task][name] - base) / abs(base))
    if not terms:
        raise ValueError("no baseline metrics: Δm needs at least one (task, metric) baseline.")
    return 100.0 * float(np.mean(terms))
