"""Datasets by name: each loader module registers its dataset next to its loader.

A registered dataset is a function ``load(**kwargs) -> Dataset`` (its tasks and a training and an
evaluation source) and, optionally, ``tasks(**kwargs) -> tuple[TaskSpec, ...]``, its task layout
without loading any data (for smoke tests and for planning single-task baselines). The trainer
(``mtlx.training``, ``TrainConfig.dataset``, ``python -m mtlx.train --dataset``) reaches every
dataset through :func:`load_dataset`; registering a new one is one decorated function beside its
loader::

  @register_dataset("my_set", tasks=lambda **kw: (TaskSpec("y", "classification", 3),))
  def my_set_dataset(seed: int = 0) -> Dataset:
      return Dataset(my_set_tasks(), load_my_set("train", seed=seed), load_my_set("test", seed=seed))

Tasks are described here by plain :class:`TaskSpec` (a name, a kind *name*, a class count): this
package depends on nothing of mtlx; the trainer turns them into ``mtlx.training.Task`` objects.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

__all__ = [
    "Dataset",
    "DatasetEntry",
    "TaskSpec",
    "dataset_names",
    "dataset_tasks",
    "get_dataset",
    "load_dataset",
    "register_dataset",
]


class TaskSpec(NamedTuple):
    """A task as a dataset describes it.

    Attributes:
      name: the task's name; a batch holds its target under this key, or as a column of the
        ``"labels"`` block ``(N, T)`` of classification datasets.
      kind: the name of a task kind of ``mtlx.training`` (``"classification"``,
        ``"segmentation"``, ``"depth"``, ``"normal"``, ``"regression"``).
      num_classes: classes of a classification or segmentation task; the output size of a
        regression task (``None``: 1).
    """

    name: str
    kind: str = "classification"
    num_classes: int | None = None


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A multi-task dataset: its tasks and two sources for :func:`mtlx.data.batches`.

    A source is a dict of NumPy arrays with a common leading axis or a random-access sequence of
    example dicts (see :mod:`mtlx.data.pipeline`).

    Attributes:
      tasks: the tasks in the order of the model's outputs (:class:`TaskSpec` from a loader, or
        ``mtlx.training.Task`` objects).
      train: the training source.
      test: the evaluation source.
      input_key: the key of the model's input in an example.
    """

    tasks: tuple[Any, ...]
    train: Any
    test: Any
    input_key: str = "image"


class DatasetEntry(NamedTuple):
    """A registered dataset: its loader and, if fixed by its arguments, its task layout."""

    name: str
    load: Callable[..., Dataset]
    tasks: Callable[..., tuple[TaskSpec, ...]] | None
    description: str


_REGISTRY: dict[str, DatasetEntry] = {}


def register_dataset(
    name: str, *, tasks: Callable[..., Sequence[TaskSpec]] | None = None
) -> Callable[[Callable[..., Dataset]], Callable[..., Dataset]]:
    """Registers ``load(**kwargs) -> Dataset`` under ``name`` (a decorator; returns ``load``).

    Args:
      name: the dataset's name (``TrainConfig.dataset``, ``--dataset``).
      tasks: ``tasks(**kwargs) -> TaskSpec sequence``, the layout ``load(**kwargs)`` will have,
        computed without touching the data (``None``: the layout is only known after loading).

    Raises:
      ValueError: ``name`` is already registered to another function.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a dataset name is a non-empty string; got {name!r}.")

    def decorator(load: Callable[..., Dataset]) -> Callable[..., Dataset]:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.load is not load:
            same = getattr(existing.load, "__qualname__", None) == getattr(
                load, "__qualname__", ""
            ) and getattr(existing.load, "__module__", None) == getattr(load, "__module__", "")
            if not same:  # a module reloaded by importlib re-registers the same function
                raise ValueError(
                    f"dataset {name!r} is already registered (by {existing.load.__module__}); "
                    "choose another name."
                )
        wrapped_tasks = None if tasks is None else (lambda **kw: tuple(tasks(**kw)))
        doc = (load.__doc__ or "").strip().split("\n")[0]
        _REGISTRY[name] = DatasetEntry(name, load, wrapped_tasks, doc)
        return load

    return decorator


def dataset_names() -> list[str]:
    """The registered dataset names, sorted."""
    return sorted(_REGISTRY)


def get_dataset(name: str) -> DatasetEntry:
    """The registry entry of ``name``.

    Raises:
      ValueError: an unknown name (the message lists the registered ones).
    """
    entry = _REGISTRY.get(name)
    if entry is None:
        raise ValueError(
            f"unknown dataset {name!r}; choose from {', '.join(dataset_names())} "
            "(a new one is registered with mtlx.data.register_dataset beside its loader)."
        )
    return entry


def load_dataset(name: str, **kwargs: Any) -> Dataset:
    """Loads the registered dataset ``name`` with its loader's keyword arguments.

    Raises:
      ValueError: an unknown name, or arguments the loader does not take.
      mtlx.data.DatasetNotFoundError: a TFDS dataset that is not prepared on disk.
    """
    entry = get_dataset(name)
    try:
        return entry.load(**kwargs)
    except TypeError as e:
        if "argument" not in str(e):
            raise
        raise ValueError(f"dataset {name!r}: {e} (check TrainConfig.dataset_kwargs).") from e


def dataset_tasks(name: str, **kwargs: Any) -> tuple[TaskSpec, ...]:
    """The task layout of dataset ``name`` loaded with ``kwargs``, without loading any data.

    Raises:
      ValueError: an unknown name, or a dataset whose tasks are only known once loaded.
    """
    entry = get_dataset(name)
    if entry.tasks is None:
        fixed = [n for n in dataset_names() if _REGISTRY[n].tasks is not None]
        raise ValueError(
            f"dataset {name!r} has no fixed task layout (its tasks come with its data); "
            f"datasets with one: {', '.join(fixed)}."
        )
    return entry.tasks(**kwargs)
