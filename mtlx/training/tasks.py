"""What the trainer knows about a task: its name, its kind, and where its target is in a batch.

A batch is a dict of NumPy/JAX arrays. Classification datasets (Multi-Digits, Multi-MNIST, CelebA)
put every task's label in one ``"labels"`` column block ``(N, T)``; dense datasets (NYUv2,
Cityscapes) put each task's target under its own key (``"segmentation"``, ``"depth"``,
``"normal"``). :meth:`Task.target` reads either layout.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal

TaskKind = Literal["classification", "segmentation", "depth", "normal"]
KINDS: tuple[str, ...] = ("classification", "segmentation", "depth", "normal")


@dataclasses.dataclass(frozen=True)
class Task:
    """One task of a multi-task problem.

    Attributes:
      name: the task's name (used in logs, tables and as the batch key of dense targets).
      kind: ``"classification"`` (logits ``(N, C)``, integer labels), ``"segmentation"`` (logits
        ``(N, H, W, C)``, integer labels ``(N, H, W)``, ``-1`` = ignore), ``"depth"`` (``(N, H, W,
        1)``, ``0`` = no measurement) or ``"normal"`` (``(N, H, W, 3)``, zero vector = invalid).
      num_classes: classes of a classification or segmentation task.
    """

    name: str
    kind: TaskKind = "classification"
    num_classes: int | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(
                f"task {self.name!r}: unknown kind {self.kind!r}; choose from {KINDS}."
            )

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


def classification_tasks(
    names: Sequence[str], num_classes: int | Sequence[int]
) -> tuple[Task, ...]:
    """Classification tasks reading columns of ``batch["labels"]`` in the order of ``names``."""
    if isinstance(num_classes, int):
        num_classes = [num_classes] * len(names)
    if len(num_classes) != len(names):
        raise ValueError(f"{len(names)} task names but {len(num_classes)} class counts.")
    return tuple(Task(n, "classification", int(c)) for n, c in zip(names, num_classes))


def check_tasks(tasks: Sequence[Task]) -> tuple[Task, ...]:
    tasks = tuple(tasks)
    if not tasks:
        raise ValueError("at least one task is needed.")
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"task names must be unique; got {names}.")
    return tasks
