"""What the trainer knows about a task: its name, its kind, and where its target is in a batch.

A batch is a dict of NumPy/JAX arrays. Classification datasets (Multi-Digits, Multi-MNIST, CelebA,
Yeast) put every task's label in one ``"labels"`` column block ``(N, T)``; dense datasets (NYUv2,
Cityscapes) and regression targets sit under their task's own key (``"segmentation"``,
``"depth"``, ...). :meth:`Task.target` reads either layout. Everything kind-specific (loss,
metrics, directions) lives in the task's kind object (:mod:`mtlx.training.kinds`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import jax

from mtlx.training.kinds import TaskKind, get_kind, kind_names

# The kind names known when this module is imported (``kind_names()`` lists later ones too).
TaskKindName = Literal["classification", "segmentation", "depth", "normal", "regression"]
KINDS: tuple[str, ...] = kind_names()


@dataclasses.dataclass(frozen=True)
class Task:
    """One task of a multi-task problem.

    Attributes:
      name: the task's name (used in logs, tables and as the batch key of its target).
      kind: a :class:`~mtlx.training.kinds.TaskKind`, given as one or by name:
        ``"classification"`` (logits ``(N, C)``, integer labels), ``"segmentation"`` (logits
        ``(N, H, W, C)``, integer labels ``(N, H, W)``, ``-1`` = ignore), ``"depth"`` (``(N, H, W,
        1)``, ``0`` = no measurement), ``"normal"`` (``(N, H, W, 3)``, zero vector = invalid) or
        ``"regression"`` (float ``(N,)`` / ``(N, D)``, NaN = missing). Stored as the object (it
        still compares equal to its name).
      num_classes: classes of a classification or segmentation task; a regression task's output
        size ``D`` (``None``: 1).
      loss_scale: a constant factor on the training loss (metrics are unaffected): the loss the
        engine differentiates and the weighting reads is ``loss_scale * kind.loss(...)``. For
        studies of scale invariance (Elich et al., 2024: Adam's head update does not change
        when a task's loss is multiplied by a constant) and for fixed per-task loss weights.
    """

    name: str
    kind: TaskKind | TaskKindName | str = "classification"
    num_classes: int | None = None
    loss_scale: float = 1.0

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a task name is a non-empty string; got {self.name!r}.")
        try:
            kind = get_kind(self.kind)
        except ValueError as e:
            raise ValueError(f"task {self.name!r}: {e}") from None
        object.__setattr__(self, "kind", kind)
        kind.check(self.name, self.num_classes)
        scale = self.loss_scale
        if (
            isinstance(scale, bool)
            or not isinstance(scale, int | float)
            or not (0 < float(scale) < float("inf"))
        ):
            raise ValueError(
                f"task {self.name!r}: loss_scale must be a positive finite number; got {scale!r}."
            )

    @property
    def output_size(self) -> int | None:
        """The size of the model output's last axis for this task (``None``: not determined)."""
        return self.kind.output_size(self.num_classes)

    def target(self, batch: Mapping[str, Any], index: int) -> Any:
        """This task's target in ``batch``: ``batch[name]``, else column ``index`` of ``labels``."""
        if self.name in batch:
            return batch[self.name]
        if "labels" in batch:
            return batch["labels"][:, index]
        raise ValueError(
            f"the batch has no target for task {self.name!r}: expected a key {self.name!r} or a "
            f"'labels' array with one column per task; batch keys: {sorted(batch)}."
        )

    def loss(
        self, output: jax.Array, batch: Mapping[str, Any], index: int, mask: Any = None
    ) -> jax.Array:
        """The scalar loss of ``output`` against this task's target in ``batch``, times
        ``loss_scale`` (jit-able)."""
        loss = self.kind.loss(
            output, self.target(batch, index), num_classes=self.num_classes, mask=mask
        )
        return loss if self.loss_scale == 1.0 else loss * self.loss_scale

    def stats(
        self, output: jax.Array, batch: Mapping[str, Any], index: int, mask: Any = None
    ) -> dict[str, jax.Array]:
        """Summable evaluation statistics of ``output`` on one batch (jit-able)."""
        return self.kind.stats(
            output, self.target(batch, index), num_classes=self.num_classes, mask=mask
        )

    def finalize(self, stats: Mapping[str, Any]) -> dict[str, float]:
        """Metrics from statistics summed over batches."""
        return self.kind.finalize(stats, num_classes=self.num_classes)


def as_task(task: Task | Sequence[Any] | Any) -> Task:
    """A :class:`Task` from a Task, a ``(name, kind, num_classes)`` tuple or a spec with those
    attributes (``mtlx.data.TaskSpec``)."""
    if isinstance(task, Task):
        return task
    if all(hasattr(task, a) for a in ("name", "kind", "num_classes")):
        return Task(task.name, task.kind, task.num_classes)
    if isinstance(task, (tuple, list)) and 1 <= len(task) <= 3:
        return Task(*task)
    raise ValueError(
        f"cannot make a task of {task!r}: give a mtlx.training.Task, a mtlx.data.TaskSpec or a "
        "(name, kind, num_classes) tuple."
    )


def classification_tasks(
    names: Sequence[str], num_classes: int | Sequence[int]
) -> tuple[Task, ...]:
    """Classification tasks reading columns of ``batch["labels"]`` in the order of ``names``."""
    if isinstance(num_classes, int):
        num_classes = [num_classes] * len(names)
    if len(num_classes) != len(names):
        raise ValueError(f"{len(names)} task names but {len(num_classes)} class counts.")
    return tuple(Task(n, "classification", int(c)) for n, c in zip(names, num_classes))


def check_tasks(tasks: Sequence[Any]) -> tuple[Task, ...]:
    """``tasks`` as a tuple of :class:`Task` (see :func:`as_task`), non-empty, unique names."""
    tasks = tuple(as_task(t) for t in tasks)
    if not tasks:
        raise ValueError("at least one task is needed.")
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"task names must be unique; got {names}.")
    return tasks
