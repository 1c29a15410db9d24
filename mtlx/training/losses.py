"""Per-task losses: each model output and its target give one scalar; the tasks stack to ``(T,)``.

Each task's loss is its kind's (:mod:`mtlx.training.kinds`): cross-entropy over labelled entries
(classification, segmentation), L1 over measured depth pixels, ``1 - cos`` over valid normals, L1
over present regression targets. Every loss averages over the valid entries only, and a batch with
no valid entry gives 0 (not ``0 / 0``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from mtlx.training.kinds import cross_entropy, depth_l1, l1, normal_cosine
from mtlx.training.tasks import Task

__all__ = [
    "cross_entropy",
    "depth_l1",
    "l1",
    "normal_cosine",
    "per_example_losses",
    "task_losses",
]


def _check_outputs(tasks: Sequence[Task], outputs: Sequence[Any]) -> None:
    if len(outputs) != len(tasks):
        raise ValueError(
            f"the model returned {len(outputs)} outputs for {len(tasks)} tasks "
            f"({[t.name for t in tasks]}); a multi-task model returns one output per task."
        )


def task_losses(
    tasks: Sequence[Task],
    outputs: Sequence[jax.Array],
    batch: Mapping[str, Any],
    mask: jax.Array | None = None,
) -> jax.Array:
    """The ``(T,)`` vector of per-task losses, in float32.

    Args:
      tasks: the tasks, in the order of the model's outputs.
      outputs: the model's per-task outputs (a tuple of T arrays).
      batch: the batch holding the targets (see :meth:`Task.target`).
      mask: optional ``(N,)`` bools; False leaves an example out of every loss (padding).

    Returns:
      ``(T,)`` losses: loss ``t`` is task ``t``'s kind's loss of output ``t`` against its target.
    """
    _check_outputs(tasks, outputs)
    return jnp.stack(
        [task.loss(out, batch, i, mask) for i, (task, out) in enumerate(zip(tasks, outputs))]
    )


def per_example_losses(
    tasks: Sequence[Task], outputs: Sequence[jax.Array], batch: Mapping[str, Any]
) -> jax.Array:
    """The ``(N, T)`` losses of every example on its own (each kind's loss on a batch of one).

    For per-example gradients (e.g. :func:`mtlx.analysis.sample_conflicts`): row ``n`` is what
    :func:`task_losses` gives on the batch made of example ``n`` alone. A dense task's loss is the
    mean over that example's valid pixels.
    """
    _check_outputs(tasks, outputs)
    columns = []
    for i, (task, out) in enumerate(zip(tasks, outputs)):
        target = task.target(batch, i)
        one = lambda o, y, task=task: task.kind.loss(o[None], y[None], num_classes=task.num_classes)
        columns.append(jax.vmap(one)(out, target))
    return jnp.stack(columns, axis=1)
