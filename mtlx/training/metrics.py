"""Per-task evaluation metrics and Δm, the mean relative change against single-task baselines.

Metrics are accumulated over evaluation batches as summable statistics (counts, sums, a confusion
matrix, an angle histogram) computed inside the jitted evaluation step; :func:`finalize` turns the
summed statistics into numbers on the host. This gives dataset-level metrics (mIoU from the
dataset confusion matrix, not a mean of per-batch mIoUs), as LibMTL reports them. What each kind
computes, and which direction is better, is defined by its kind (:mod:`mtlx.training.kinds`):

=============== ==================================================== ===================
kind            metrics                                              better
=============== ==================================================== ===================
classification  ``accuracy``                                         higher
segmentation    ``miou``, ``pixel_acc``                              higher
depth           ``abs_err``, ``rel_err``                             lower
normal          ``mean_angle``, ``median_angle`` (degrees);          lower;
                ``within_11.25``, ``within_22.5``, ``within_30``     higher
regression      ``mae`` (and ``rmse`` with ``Regression(rmse=True)``) lower
=============== ==================================================== ===================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from mtlx.training import kinds as kinds_lib
from mtlx.training.tasks import Task, check_tasks

__all__ = [
    "DELTA_M_CONVENTION",
    "HIGHER_IS_BETTER",
    "delta_m",
    "finalize",
    "higher_is_better",
    "metric_stats",
]

DELTA_M_CONVENTION = (
    "Δm = mean over the (task, metric) pairs with a single-task baseline B of ±(M − B)/|B|, in %: "
    "+ where higher is better, − where lower is better; positive = better than single-task."
)


def _registered_directions() -> dict[str, bool]:
    out: dict[str, bool] = {}
    for name in kinds_lib.kind_names():
        out.update(kinds_lib.get_kind(name).directions())
    out.setdefault("rmse", False)  # Regression(rmse=True)
    return out


# {metric: higher is better} of the kinds registered at import (for code without tasks at hand).
HIGHER_IS_BETTER: dict[str, bool] = _registered_directions()


def higher_is_better(
    metric: str, task: str | None = None, tasks: Sequence[Task] | None = None
) -> bool:
    """Whether a larger ``metric`` is better: from ``task``'s kind when ``tasks`` are given, else
    from the metric name over every registered kind.

    Raises:
      ValueError: a metric no kind defines (or that the task's kind does not report).
    """
    if tasks is not None and task is not None:
        by_name = {t.name: t for t in check_tasks(tasks)}
        if task in by_name:
            return by_name[task].kind.higher_is_better(metric)
    directions = _registered_directions()
    if metric not in directions:
        raise ValueError(
            f"unknown metric {metric!r}: Δm needs to know whether higher is better; pass the "
            "tasks (their kinds say) or use a metric of a registered kind "
            f"({', '.join(sorted(directions))})."
        )
    return directions[metric]


def metric_stats(
    tasks: Sequence[Task],
    outputs: Sequence[jax.Array],
    batch: Mapping[str, Any],
    mask: jax.Array | None = None,
) -> tuple[dict[str, jax.Array], ...]:
    """Summable evaluation statistics of one batch, one dict per task (jit-able).

    Args:
      tasks: the tasks, in the order of the model's outputs.
      outputs: the model's per-task outputs.
      batch: the batch holding the targets.
      mask: optional ``(N,)`` bools; False leaves an example out (the padding of a short batch).

    Returns:
      One dict of arrays per task; add them over batches (``jax.tree.map(operator.add, ...)``) and
      pass the sum to :func:`finalize`.
    """
    return tuple(
        task.stats(out, batch, i, mask) for i, (task, out) in enumerate(zip(tasks, outputs))
    )


def finalize(
    tasks: Sequence[Task], stats: Sequence[Mapping[str, Any]]
) -> dict[str, dict[str, float]]:
    """Metrics from summed statistics: ``{task name: {metric name: value}}`` (host floats).

    A metric with no valid entry (e.g. no labelled pixel) is NaN, never a division error.
    """
    return {
        task.name: task.finalize(jax.tree.map(np.asarray, dict(s)))
        for task, s in zip(check_tasks(tasks), stats)
    }


def delta_m(
    results: Mapping[str, Mapping[str, float]],
    baselines: Mapping[str, Mapping[str, float]],
    tasks: Sequence[Task] | None = None,
) -> float:
    r"""Δm (%): the mean relative improvement of every metric over its single-task baseline.

    .. math::
      \Delta m = \frac{100}{K} \sum_{k=1}^K (-1)^{l_k} \frac{M_k - B_k}{|B_k|}

    over the K (task, metric) pairs present in ``baselines``, with :math:`l_k = 1` when lower is
    better (Maninis et al., CVPR 2019; Vandenhende et al., TPAMI 2021). The direction of each
    metric comes from its task's kind (``tasks``), else from the metric's name.

    .. warning::
      Positive is better here (an improvement), as in LibMTL's ``improvement``. Nash-MTL, CAGrad
      and FAMO report the negation (lower is better): negate to compare with their tables.

    Args:
      results: ``{task: {metric: value}}`` of the multi-task model (from :func:`finalize`).
      baselines: ``{task: {metric: value}}`` of the single-task models; only these pairs count.
      tasks: the tasks, whose kinds give each metric's direction.

    Returns:
      Δm in percent.
    """
    terms = []
    for task, metrics in baselines.items():
        for name, base in metrics.items():
            if task not in results or name not in results[task]:
                raise ValueError(
                    f"no result for baseline metric {task}/{name}: the baselines must come from "
                    "the same tasks and metrics as the run."
                )
            if base == 0:
                raise ValueError(f"baseline {task}/{name} is 0: Δm divides by the baseline.")
            sign = 1.0 if higher_is_better(name, task, tasks) else -1.0
            terms.append(sign * (results[task][name] - base) / abs(base))
    if not terms:
        raise ValueError("no baseline metrics: Δm needs at least one (task, metric) baseline.")
    return 100.0 * float(np.mean(terms))
