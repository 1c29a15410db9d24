"""Datasets by name for the trainer: the tasks, a training source and an evaluation source.

``"digits"`` (Multi-Digits, offline, the default) and ``"synthetic"`` (random arrays with the
shapes of any benchmark, for smoke tests) always work. The TFDS benchmarks (``"multi_mnist"``,
with ``variant="fashion"`` for Multi-Fashion+MNIST; ``"celeba"``; ``"nyuv2"``; ``"cityscapes"``)
come from :mod:`mtlx.data` loaders, which fail fast with instructions when their data is not on
disk.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from mtlx import data
from mtlx.training.tasks import Task, classification_tasks

# The task layout of every benchmark (synthetic stand-ins copy it).
NYUV2_TASKS = (
    Task("segmentation", "segmentation", 13),
    Task("depth", "depth"),
    Task("normal", "normal"),
)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A multi-task dataset as the trainer sees it: tasks and two sources for ``mtlx.data.batches``.

    A source is a dict of NumPy arrays with a common leading axis or a random-access sequence of
    example dicts (see :mod:`mtlx.data.pipeline`).
    """

    tasks: tuple[Task, ...]
    train: Any
    test: Any
    input_key: str = "image"


def digits(
    tasks: Sequence[str] = ("left", "right"),
    num_train: int | None = None,
    num_test: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Multi-Digits (:func:`mtlx.data.load_multi_digits`): offline, 8 x 16 images, 2-4 tasks."""
    load = lambda split, n: data.load_multi_digits(
        split, tasks=tuple(tasks), num_examples=n, seed=seed
    )
    return Dataset(
        classification_tasks(tuple(tasks), [data.DIGITS_NUM_CLASSES[t] for t in tasks]),
        load("train", num_train),
        load("test", num_test),
    )


def _random_targets(
    rng: np.random.Generator, task: Task, n: int, hw: tuple[int, int]
) -> np.ndarray:
    if task.kind == "classification":
        return rng.integers(0, task.num_classes or 2, n).astype(np.int32)
    if task.kind == "segmentation":
        labels = rng.integers(0, task.num_classes or 2, (n, *hw)).astype(np.int32)
        return np.where(rng.random((n, *hw)) < 0.1, -1, labels).astype(np.int32)  # some ignored
    if task.kind == "depth":
        return (rng.random((n, *hw, 1)) * 5.0 + 0.1).astype(np.float32)
    normal = rng.standard_normal((n, *hw, 3)).astype(np.float32)
    return normal / np.linalg.norm(normal, axis=-1, keepdims=True)


def synthetic(
    tasks: Sequence[Task],
    image_shape: Sequence[int],
    num_train: int = 64,
    num_test: int = 32,
    seed: int = 0,
) -> Dataset:
    """Random data shaped like a benchmark: images ``(N, *image_shape)`` and per-task targets.

    Classification targets go in ``"labels"`` ``(N, T)``; dense targets under their task's name,
    at the image's resolution.
    """
    tasks = tuple(tasks)
    rng = np.random.default_rng(seed)
    hw = tuple(image_shape[:2])

    def split(n):
        out: dict[str, np.ndarray] = {"image": rng.random((n, *image_shape)).astype(np.float32)}
        labels = [_random_targets(rng, t, n, hw) for t in tasks if t.kind == "classification"]
        if labels:
            out["labels"] = np.stack(labels, axis=1)
        for t in tasks:
            if t.kind != "classification":
                out[t.name] = _random_targets(rng, t, n, hw)
        return out

    return Dataset(tasks, split(num_train), split(num_test))


def _multi_mnist_tasks(kwargs: Mapping[str, Any]) -> tuple[Task, ...]:
    del kwargs
    return classification_tasks(("left", "right"), 10)


def _celeba_tasks(kwargs: Mapping[str, Any]) -> tuple[Task, ...]:
    return classification_tasks(tuple(kwargs.get("attributes", data.CELEBA_ATTRIBUTES)), 2)


def _nyuv2_tasks(kwargs: Mapping[str, Any]) -> tuple[Task, ...]:
    del kwargs
    return NYUV2_TASKS


def _cityscapes_tasks(kwargs: Mapping[str, Any]) -> tuple[Task, ...]:
    return (
        Task("segmentation", "segmentation", int(kwargs.get("num_classes", 7))),
        Task("depth", "depth"),
    )


def _digits_tasks(kwargs: Mapping[str, Any]) -> tuple[Task, ...]:
    names_ = tuple(kwargs.get("tasks", ("left", "right")))
    return classification_tasks(names_, [data.DIGITS_NUM_CLASSES[t] for t in names_])


# name -> (mtlx.data loader, task layout from the loader's keyword arguments)
_TFDS: dict[str, tuple[str, Callable[[Mapping[str, Any]], tuple[Task, ...]]]] = {
    "multi_mnist": ("load_multi_mnist", _multi_mnist_tasks),
    "celeba": ("load_celeba", _celeba_tasks),
    "nyuv2": ("load_nyuv2", _nyuv2_tasks),
    "cityscapes": ("load_cityscapes", _cityscapes_tasks),
}


def tasks_of(name: str, **kwargs: Any) -> tuple[Task, ...]:
    """The task layout of dataset ``name`` (loaded with ``kwargs``), without loading any data."""
    if name == "digits":
        return _digits_tasks(kwargs)
    if name in _TFDS:
        return _TFDS[name][1](kwargs)
    raise ValueError(
        f"dataset {name!r} has no fixed task layout; known: digits, {', '.join(_TFDS)}."
    )


def _load_tfds(name: str, **kwargs: Any) -> Dataset:
    loader = getattr(data, _TFDS[name][0])
    return Dataset(tasks_of(name, **kwargs), loader("train", **kwargs), loader("test", **kwargs))


def names() -> list[str]:
    return sorted(["digits", "synthetic", *_TFDS])


def load(name: str, **kwargs: Any) -> Dataset:
    """The dataset ``name`` with its loader's keyword arguments.

    Raises:
      ValueError: an unknown name (the message lists the known ones).
    """
    if name == "digits":
        return digits(**kwargs)
    if name == "synthetic":
        return synthetic(**kwargs)
    if name in _TFDS:
        return _load_tfds(name, **kwargs)
    raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(names())}.")
