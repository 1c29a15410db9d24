"""Datasets by name for the trainer: the tasks, a training source and an evaluation source.

Every dataset of :mod:`mtlx.data` is registered beside its loader (:func:`mtlx.data.register_dataset`)
and reachable here by name (``TrainConfig.dataset``, ``python -m mtlx.train --dataset``):
``"digits"`` (Multi-Digits, offline, the default), ``"yeast"`` (offline with the ``yeast`` extra),
the TFDS benchmarks ``"multi_mnist"`` (``variant="fashion"`` for Multi-Fashion), ``"celeba"``,
``"cifar10_corrupted"``, ``"nyuv2"``, ``"cityscapes"`` (they fail fast with instructions when
their data is not on disk), and ``"synthetic"`` (random arrays shaped like any benchmark, for
smoke tests; registered here because it draws targets from the task kinds).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from mtlx import data
from mtlx.data import Dataset, register_dataset
from mtlx.training.tasks import Task, check_tasks

__all__ = ["Dataset", "digits", "load", "names", "register_dataset", "synthetic", "tasks_of"]

# The task layout of NYUv2 (synthetic stand-ins copy it).
NYUV2_TASKS = (
    Task("segmentation", "segmentation", 13),
    Task("depth", "depth"),
    Task("normal", "normal"),
)


def _with_tasks(ds: Dataset) -> Dataset:
    """``ds`` with its task specs turned into :class:`Task` objects."""
    return dataclasses.replace(ds, tasks=check_tasks(ds.tasks))


def digits(
    tasks: Sequence[str] = ("left", "right"),
    num_train: int | None = None,
    num_test: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Multi-Digits (:func:`mtlx.data.load_multi_digits`): offline, 8 x 16 images, 2-4 tasks."""
    return load("digits", tasks=tasks, num_train=num_train, num_test=num_test, seed=seed)


def synthetic(
    tasks: Sequence[Task | Any],
    image_shape: Sequence[int],
    num_train: int = 64,
    num_test: int = 32,
    seed: int = 0,
) -> Dataset:
    """Random data shaped like a benchmark: images ``(N, *image_shape)`` and per-task targets.

    Targets come from each task's kind (:meth:`~mtlx.training.kinds.TaskKind.synthetic_target`,
    dense ones at the image's resolution). When every task's kind lives in the ``"labels"`` block
    (classification), the targets are its columns ``(N, T)``; otherwise each target sits under its
    task's name.
    """
    tasks = check_tasks(tasks)
    rng = np.random.default_rng(seed)
    spatial = tuple(image_shape[:2])
    in_block = all(t.kind.in_label_block for t in tasks)

    def split(n: int) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {"image": rng.random((n, *image_shape)).astype(np.float32)}
        targets = {t.name: t.kind.synthetic_target(rng, n, spatial, t.num_classes) for t in tasks}
        if in_block:
            out["labels"] = np.stack([targets[t.name] for t in tasks], axis=1)
        else:
            out.update(targets)
        return out

    return Dataset(tasks, split(num_train), split(num_test))


register_dataset("synthetic")(synthetic)


def names() -> list[str]:
    """The datasets the trainer can load by name."""
    return data.dataset_names()


def tasks_of(name: str, **kwargs: Any) -> tuple[Task, ...]:
    """The task layout of dataset ``name`` (loaded with ``kwargs``), without loading any data.

    Raises:
      ValueError: an unknown dataset, or one whose tasks are only known after loading.
    """
    return check_tasks(data.dataset_tasks(name, **kwargs))


def load(name: str, **kwargs: Any) -> Dataset:
    """The dataset ``name`` with its loader's keyword arguments, its tasks as :class:`Task`.

    Raises:
      ValueError: an unknown name (the message lists the known ones).
      mtlx.data.DatasetNotFoundError: a TFDS dataset whose data is not prepared.
    """
    return _with_tasks(data.load_dataset(name, **kwargs))
