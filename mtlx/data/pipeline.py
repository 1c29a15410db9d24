"""Batches for training and evaluation: seeded shuffling, batching, a resumable position.

Every dataset in :mod:`mtlx.data` is a *source*: either a dict of NumPy arrays with a common
leading axis (``load_multi_digits``, ``load_multi_mnist``, ``load_cifar10_corrupted``) or a
random-access sequence of example dicts (``len(source)`` and ``source[i]``: ``load_celeba``,
``load_nyuv2``, ``load_cityscapes``, or any ``tfds.data_source``). :func:`batches` turns one into
a stream of NumPy batches::

  train = mtlx.data.batches(mtlx.data.load_multi_digits("train"), 64, seed=0)
  for batch in itertools.islice(train, 1000):  # {"image": (64, 8, 16, 1), "labels": (64, 2)}
      ...
  position = train.get_state()                 # {"step": 1000}: save it with the checkpoint
  train = mtlx.data.batches(source, 64, seed=0).set_state(position)  # continues exactly there

  test = mtlx.data.batches(mtlx.data.load_multi_digits("test"), 256, shuffle=False,
                           num_epochs=1, drop_remainder=False)      # one pass, every example

Batch ``step`` is a pure function of ``(source, batch_size, seed, shuffle, drop_remainder,
step)``: epoch ``e`` visits the examples in a permutation drawn from ``(seed, e)`` (grain's
``MapDataset.shuffle`` reseeded each epoch), and batches never straddle two epochs. So the
position is one integer and resuming is bit-exact. Batches are read on ``num_threads`` background
threads (record sources decode images there).

This module imports only NumPy and grain.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

Batch = dict[str, Any]
Source = Mapping[str, np.ndarray] | Sequence[Mapping[str, Any]]


def _num_examples(source: Any) -> int:
    if isinstance(source, Mapping):
        if not source:
            raise ValueError("the source dict has no arrays.")
        sizes = {key: len(value) for key, value in source.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"the source arrays differ in length: {sizes}.")
        return next(iter(sizes.values()))
    if not (hasattr(source, "__len__") and hasattr(source, "__getitem__")):
        raise TypeError(
            "a source is a dict of arrays or a random-access sequence of example dicts "
            f"(len() and [i]); got {type(source).__name__}."
        )
    return len(source)


def _stack(examples: Sequence[Any]) -> Any:
    first = examples[0]
    if isinstance(first, Mapping):
        return {key: _stack([e[key] for e in examples]) for key in first}
    return np.stack([np.asarray(e) for e in examples])


def _gather(source: Any, index: np.ndarray) -> Batch:
    if isinstance(source, Mapping):
        return {key: np.asarray(value)[index] for key, value in source.items()}
    return _stack([source[int(i)] for i in index])


class Batches(Iterator[Batch]):
    """A resumable stream of NumPy batches from a source; see the module docstring.

    Also random-access: ``batches[step]`` is batch ``step`` whatever the current position.

    Attributes:
      steps_per_epoch: batches per pass over the source.
      num_examples: examples in the source.
    """

    def __init__(
        self,
        source: Source,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        num_epochs: int | None = None,
        drop_remainder: bool = True,
        transform: Callable[[Batch], Batch] | None = None,
        num_threads: int = 0,
    ):
        import grain  # noqa: PLC0415 - grain is an optional dependency ("mtlx[data]")

        self.num_examples = _num_examples(source)
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size}.")
        if drop_remainder and batch_size > self.num_examples:
            raise ValueError(
                f"batch_size {batch_size} exceeds the {self.num_examples} examples of the source "
                "and drop_remainder=True would leave no batch."
            )
        if num_epochs is not None and int(num_epochs) < 1:
            raise ValueError(f"num_epochs must be None or a positive integer; got {num_epochs}.")
        if int(num_threads) < 0:
            raise ValueError(f"num_threads must be >= 0; got {num_threads}.")
        indices = grain.MapDataset.range(self.num_examples)
        if shuffle:
            indices = indices.shuffle(seed=int(seed))
        indices = indices.batch(batch_size, drop_remainder=drop_remainder)
        self.steps_per_epoch = len(indices)
        self._indices = indices.repeat(None if num_epochs is None else int(num_epochs))
        self._num_steps = None if num_epochs is None else len(self._indices)
        self._source = source
        self._transform = transform
        self._num_threads = int(num_threads)
        self._pool = None
        self._pending: dict[int, concurrent.futures.Future] = {}
        self._step = 0

    def __len__(self) -> int:
        if self._num_steps is None:
            raise TypeError("an endless stream (num_epochs=None) has no len(); see steps_per_epoch")
        return self._num_steps

    def __getitem__(self, step: int) -> Batch:
        step = int(step)
        if step < 0 or (self._num_steps is not None and step >= self._num_steps):
            raise IndexError(f"step {step} is outside the stream of {self._num_steps} batches.")
        batch = _gather(self._source, np.asarray(self._indices[step]))
        return self._transform(batch) if self._transform is not None else batch

    def __iter__(self) -> Batches:
        return self

    def __next__(self) -> Batch:
        if self._num_steps is not None and self._step >= self._num_steps:
            raise StopIteration
        if self._num_threads == 0:
            batch = self[self._step]
        else:
            batch = self._prefetched(self._step)
        self._step += 1
        return batch

    def _prefetched(self, step: int) -> Batch:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(self._num_threads)
        last = step + self._num_threads
        if self._num_steps is not None:
            last = min(last, self._num_steps - 1)
        for ahead in range(step, last + 1):
            if ahead not in self._pending:
                self._pending[ahead] = self._pool.submit(self.__getitem__, ahead)
        return self._pending.pop(step).result()

    @property
    def step(self) -> int:
        """The index of the next batch."""
        return self._step

    def get_state(self) -> dict[str, int]:
        """The position ``{"step": int}``: all that resuming needs (given the same arguments)."""
        return {"step": self._step}

    def set_state(self, state: Mapping[str, Any]) -> Batches:
        """Moves to a position from :meth:`get_state`; returns ``self``."""
        step = int(np.asarray(state["step"]))
        if step < 0:
            raise ValueError(f"the position must be a non-negative step; got {step}.")
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        self._step = step
        return self

    def close(self) -> None:
        """Stops the prefetch threads (a no-op without them)."""
        if self._pool is not None:
            for future in self._pending.values():
                future.cancel()
            self._pending.clear()
            self._pool.shutdown(wait=False)
            self._pool = None


def batches(
    source: Source,
    batch_size: int,
    *,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = None,
    drop_remainder: bool = True,
    transform: Callable[[Batch], Batch] | None = None,
    num_threads: int = 0,
) -> Batches:
    """A resumable stream of NumPy batches from a source (see the module docstring).

    Args:
      source: a dict of arrays with a common leading axis, or a random-access sequence of example
        dicts (nested dicts are stacked leaf by leaf).
      batch_size: examples per batch.
      seed: the shuffling seed (epoch ``e`` uses a permutation drawn from ``(seed, e)``).
      shuffle: shuffle each epoch (False: source order, e.g. for evaluation).
      num_epochs: passes over the source; ``None`` for an endless stream.
      drop_remainder: drop each epoch's last, smaller batch (True for training: one jit shape).
      transform: a function applied to each NumPy batch (vectorised preprocessing).
      num_threads: background threads reading batches ahead (0: read on demand).

    Returns:
      A :class:`Batches` iterator with ``get_state()`` / ``set_state(state)``, random access
      ``[step]``, ``steps_per_epoch`` and (when finite) ``len()``.
    """
    return Batches(
        source,
        batch_size,
        seed=seed,
        shuffle=shuffle,
        num_epochs=num_epochs,
        drop_remainder=drop_remainder,
        transform=transform,
        num_threads=num_threads,
    )
