"""Hard parameter sharing: a shared encoder, per-task heads, and the shared/task-specific split."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

from mtlx._src.paths import key_name

HEADS = "heads"  # the attribute, hence the path key, under which the task heads live
# Task-specific parameters outside the heads (MMoE's gates, CGC's task experts, MTAN's attention
# modules): every leaf under this key carries a leading task axis T, slice t used by task t only.
TASK_SPECIFIC = "task_specific"
TASK_SPECIFIC_KEYS = (HEADS, TASK_SPECIFIC)


class TaskHeads(nnx.Module):
    """T identical heads, stacked: every parameter has a leading task axis.

    The constructor of one head is vectorised with ``nnx.vmap`` over T split keys, so each head
    parameter is one array of shape ``(T, *shape)``: a task-specific leaf in the sense of
    :func:`mtlx.value_and_jacobian` (task t's gradient lands in row t), and the T heads run as one
    batched computation.

    Example::

      >>> from flax import nnx
      >>> import jax.numpy as jnp
      >>> heads = TaskHeads(lambda rngs: nnx.Linear(8, 10, rngs=rngs), 3, rngs=nnx.Rngs(0))
      >>> heads.head.kernel.shape
      (3, 8, 10)
      >>> [y.shape for y in heads(jnp.ones((5, 8)))]
      [(5, 10), (5, 10), (5, 10)]

    Tasks with different output sizes (a 10-way classifier and a scalar regression) can still
    share one stacked head: build it with the largest size and give ``output_sizes``; task t's
    output is the first ``output_sizes[t]`` entries of its head's last axis (the unused columns
    get zero gradients and never move).

    Args:
      make_head: ``make_head(rngs) -> nnx.Module``, the constructor of one head (it must not
        depend on Python-side randomness: it is traced once under ``vmap``).
      num_tasks: T, the number of heads.
      rngs: the random streams; each head gets its own split of every stream.
      output_sizes: per task, how much of its head's last axis is its output (``None``: all).
    """

    def __init__(
        self,
        make_head: Callable[[nnx.Rngs], nnx.Module],
        num_tasks: int,
        *,
        rngs: nnx.Rngs,
        output_sizes: Sequence[int] | None = None,
    ):
        if int(num_tasks) < 1:
            raise ValueError(f"num_tasks must be a positive integer; got {num_tasks!r}.")
        self.num_tasks = int(num_tasks)
        if output_sizes is not None:
            output_sizes = tuple(int(k) for k in output_sizes)
            if len(output_sizes) != self.num_tasks or min(output_sizes) < 1:
                raise ValueError(
                    f"output_sizes needs one positive size per task ({self.num_tasks}); got "
                    f"{output_sizes}."
                )
        self.output_sizes = output_sizes

        @nnx.vmap(in_axes=0, out_axes=0)
        def create(rngs: nnx.Rngs) -> nnx.Module:
            return make_head(rngs)

        self.head = create(rngs.split(self.num_tasks))

    @classmethod
    def sized(
        cls,
        make_head: Callable[[int, nnx.Rngs], nnx.Module],
        output_size: int | Sequence[int],
        num_tasks: int,
        *,
        rngs: nnx.Rngs,
    ) -> TaskHeads:
        """T stacked heads from ``make_head(size, rngs)`` and one output size for all tasks or
        one per task (built as wide as the largest, each task reading its own columns)."""
        sizes = _per_task_sizes(output_size, num_tasks)
        return cls(
            lambda r: make_head(max(sizes), r),
            num_tasks,
            rngs=rngs,
            output_sizes=None if len(set(sizes)) == 1 else sizes,
        )

    def stacked(self, features: Any) -> Any:
        """Every head on the same features: outputs with a leading task axis ``(T, ...)``."""

        @nnx.vmap(in_axes=(0, None), out_axes=0)
        def apply(head: nnx.Module, x: Any) -> Any:
            return head(x)

        return apply(self.head, features)

    def __call__(self, features: Any) -> tuple[Any, ...]:
        """The T per-task outputs, as a tuple in task order."""
        out = self.stacked(features)
        if self.output_sizes is None:
            return tuple(jax.tree.map(lambda y: y[t], out) for t in range(self.num_tasks))
        return tuple(out[t][..., :k] for t, k in enumerate(self.output_sizes))


def _per_task_sizes(size: int | Sequence[int], num_tasks: int) -> tuple[int, ...]:
    """One output size per task from an int (all alike) or a sequence of T sizes."""
    if isinstance(size, int | np.integer):
        return (int(size),) * int(num_tasks)
    sizes = tuple(int(k) for k in size)
    if len(sizes) != int(num_tasks):
        raise ValueError(
            f"got {len(sizes)} output sizes {sizes} for {num_tasks} tasks: give one per task, or "
            "one int for all."
        )
    return sizes


class PerTaskHeads(nnx.Module):
    """Heterogeneous heads (different output sizes per task), one module per named task.

    Their parameters have no task axis; they are task-specific by path (they live under
    ``heads``, see :func:`is_shared`).

    :func:`mtlx.value_and_jacobian` takes them as they are: a task-specific leaf may belong to
    one task as a whole (only that task's loss depends on it), so the gradient of the summed
    losses is each head's own task's gradient (SegNet's segmentation, depth and normal heads are
    trained this way). Stacked :class:`TaskHeads` are faster (the T heads run as one batched
    computation) where the heads have one shape.

    Args:
      heads: ``{task name: module}``; the output tuple follows this order.
    """

    def __init__(self, heads: Mapping[str, nnx.Module]):
        if not heads:
            raise ValueError("PerTaskHeads needs at least one head.")
        self.names = tuple(heads)
        self.by_task = nnx.Dict(dict(heads))

    @property
    def num_tasks(self) -> int:
        return len(self.names)

    def __call__(self, features: Any) -> tuple[Any, ...]:
        return tuple(self.by_task[name](features) for name in self.names)


class MultiTaskModel(nnx.Module):
    """Hard parameter sharing: ``model(x) = heads(encoder(x))``, a tuple of T task outputs.

    Args:
      encoder: the shared trunk, ``encoder(x) -> features``.
      heads: the task-specific part, ``heads(features) -> tuple`` of T outputs in a fixed task
        order (:class:`TaskHeads` or :class:`PerTaskHeads`).
    """

    def __init__(self, encoder: nnx.Module, heads: nnx.Module):
        self.encoder = encoder
        self.heads = heads

    @property
    def num_tasks(self) -> int:
        return self.heads.num_tasks

    def __call__(self, x: jax.Array) -> tuple[jax.Array, ...]:
        return tuple(self.heads(self.encoder(x)))


def is_shared(path: tuple, leaf: Any = None) -> bool:
    """Whether a parameter is shared across tasks: False for every path through ``heads`` or
    ``task_specific``.

    The predicate for ``mtlx.value_and_jacobian(loss_fn, shared=is_shared)`` on the parameter
    state of any model in :mod:`mtlx.models` (``nnx.split(model, nnx.Param, ...)``): the heads of
    a :class:`MultiTaskModel`, and the task-specific parts of the other architectures (gates,
    task experts, attention modules), which they keep under the attribute ``task_specific``
    with a leading task axis.

    Args:
      path: a ``jax.tree_util`` key path (``DictKey``/``GetAttrKey``/... entries) or an nnx path
        (a tuple of strings and ints).
      leaf: the parameter (unused; accepted for the ``(path, leaf)`` predicate protocol).

    Returns:
      ``False`` if some key of ``path`` is ``"heads"`` or ``"task_specific"``, else ``True``.
    """
    del leaf
    return not any(key_name(entry) in TASK_SPECIFIC_KEYS for entry in path)
