"""Per-task losses: each model output and its target give one scalar; the tasks stack to ``(T,)``.

The dense losses follow LibMTL's NYUv2 setup (Liu et al., "End-to-End Multi-Task Learning with
Attention", CVPR 2019): cross-entropy over labelled pixels, L1 depth over pixels with a depth
measurement, and ``1 - cos`` between normalised predicted and true normals over valid pixels.
Every loss averages over the valid entries only, and a batch with no valid entry gives 0 (not
``0 / 0``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from mtlx.training.tasks import Task


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    mask = mask.astype(values.dtype)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy over entries whose label is not negative (``-1`` = ignore).

    Args:
      logits: ``(..., C)`` unnormalised scores.
      labels: ``(...)`` integer labels in ``[0, C)``, or a negative value to ignore an entry.

    Returns:
      The scalar mean loss over the labelled entries (0 when none is labelled).
    """
    valid = labels >= 0
    per_entry = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), jnp.where(valid, labels, 0)
    )
    return _masked_mean(per_entry, valid)


def depth_l1(prediction: jax.Array, target: jax.Array) -> jax.Array:
    """Mean absolute depth error over pixels with a measurement (target != 0).

    Args:
      prediction: ``(N, H, W, 1)`` predicted depth.
      target: ``(N, H, W, 1)`` true depth, 0 where there is no measurement.
    """
    prediction, target = prediction.astype(jnp.float32), target.astype(jnp.float32)
    return _masked_mean(jnp.abs(prediction - target), target != 0)


def _unit(x: jax.Array) -> jax.Array:
    norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
    return x / jnp.where(norm > 0, norm, 1.0)  # a zero prediction stays zero instead of NaN


def normal_cosine(prediction: jax.Array, target: jax.Array) -> jax.Array:
    """``1 - cos(prediction, target)`` averaged over pixels with a non-zero true normal.

    Args:
      prediction: ``(N, H, W, 3)`` predicted normals (normalised here).
      target: ``(N, H, W, 3)`` true unit normals, the zero vector where invalid.
    """
    prediction, target = prediction.astype(jnp.float32), target.astype(jnp.float32)
    valid = jnp.any(target != 0, axis=-1)
    cos = jnp.sum(_unit(prediction) * target, axis=-1)
    return _masked_mean(1.0 - cos, valid)


_LOSSES = {
    "classification": cross_entropy,
    "segmentation": cross_entropy,
    "depth": depth_l1,
    "normal": normal_cosine,
}


def task_losses(
    tasks: Sequence[Task], outputs: Sequence[jax.Array], batch: Mapping[str, Any]
) -> jax.Array:
    """The ``(T,)`` vector of per-task losses, in float32.

    Args:
      tasks: the tasks, in the order of the model's outputs.
      outputs: the model's per-task outputs (a tuple of T arrays).
      batch: the batch holding the targets (see :meth:`Task.target`).

    Returns:
      ``(T,)`` losses: loss ``t`` is the kind-specific loss of output ``t`` against its target.
    """
    if len(outputs) != len(tasks):
        raise ValueError(
            f"the model returned {len(outputs)} outputs for {len(tasks)} tasks "
            f"({[t.name for t in tasks]}); a multi-task model returns one output per task."
        )
    return jnp.stack(
        [
            _LOSSES[task.kind](out, task.target(batch, i))
            for i, (task, out) in enumerate(zip(tasks, outputs))
        ]
    )
