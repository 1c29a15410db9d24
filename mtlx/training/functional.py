"""A pure function and its parameters as a Flax NNX module, so the trainer can train it.

The trainer (:func:`mtlx.training.train`, :func:`mtlx.training.make_train_step`) trains
``nnx.Module`` objects. A model written as a pure ``apply(params, x)`` (a model transformed with
``jax.vmap``, such as Recon's split model :func:`mtlx.analysis.split_apply`, or any hand-written
function) becomes one with :class:`FunctionalModel`; its parameters keep their paths, so layer
names (``mtlx.conflict_monitor``) and ``shared=`` predicates read the same as on ``params``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
from flax import nnx

__all__ = ["FunctionalModel"]


class FunctionalModel(nnx.Module):
    """``apply(params, *inputs)`` with trainable ``params`` (each leaf an ``nnx.Param``).

    Example (Recon's split model)::

      graphdef, params, rest = nnx.split(model, nnx.Param, ...)
      params, rest = nnx.as_pure(params), nnx.as_pure(rest)
      apply = lambda p, x: nnx.merge(graphdef, p, rest)(x)
      split, axes = mtlx.analysis.split_params(params, ["encoder/conv2"], num_tasks)
      module = FunctionalModel(
          mtlx.analysis.split_apply(apply, axes, num_tasks),
          split,
          task_apply=mtlx.analysis.split_task_apply(apply, axes, num_tasks),
      )
      train(config, model=module, shared=lambda path, leaf: ...)

    With ``task_apply`` (task t's output from a pass of its own), the trainer computes the
    Jacobian with :func:`mtlx.value_and_jacobian_per_task`: one backward pass through the T passes
    rather than T backward passes through ``apply`` (which, for a split model, runs every copy).

    Args:
      apply: ``apply(params, *inputs) -> outputs`` (one output per task for the trainer); it gets
        ``params`` with the structure given here (a dict, or an ``nnx.State`` of plain arrays).
      params: a mapping with string keys (nested dicts or an ``nnx.State``) of arrays; each
        top-level key becomes an attribute of the module, so parameter paths are unchanged.
      task_apply: optional ``task_apply(params, t, *inputs) -> output of task t`` (``t`` a Python
        int), equal to ``apply(params, *inputs)[t]``; see :meth:`task_output`.
    """

    def __init__(
        self,
        apply: Callable[..., Any],
        params: Mapping[str, Any],
        *,
        task_apply: Callable[..., Any] | None = None,
    ):
        if not callable(apply):
            raise ValueError(f"apply must be a function apply(params, *inputs); got {apply!r}.")
        if task_apply is not None and not callable(task_apply):
            raise ValueError(
                f"task_apply must be a function task_apply(params, t, *inputs); got {task_apply!r}."
            )
        self._as_state = isinstance(params, nnx.State)
        if self._as_state:
            params = nnx.to_pure_dict(nnx.as_pure(params))
        if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
            raise ValueError(
                "FunctionalModel takes params as a mapping with string keys (a dict or an "
                f"nnx.State); got {type(params).__name__}. Wrap other pytrees as {{'params': tree}}."
            )
        reserved = ("apply", "task_apply", "has_task_outputs", "task_output", "params")
        clash = [k for k in params if k.startswith("_") or hasattr(nnx.Module, k) or k in reserved]
        if clash:
            raise ValueError(
                f"parameter keys {clash} clash with module attributes; rename them or wrap the "
                "tree as {'params': tree}."
            )
        self.apply = apply
        self.task_apply = task_apply
        for key, tree in params.items():
            setattr(self, key, nnx.data(jax.tree.map(lambda x: nnx.Param(x), tree)))

    def params(self) -> Any:
        """The current parameters, with the structure ``apply`` takes (plain arrays)."""
        state = nnx.as_pure(nnx.state(self, nnx.Param))
        return state if self._as_state else nnx.to_pure_dict(state)

    @property
    def has_task_outputs(self) -> bool:
        """Whether :meth:`task_output` runs one task alone (``task_apply`` was given).

        The trainer (:func:`mtlx.training.make_train_step`) reads this attribute on any model: a
        model with ``has_task_outputs = True`` and a ``task_output(t, *inputs)`` method is trained
        through :func:`mtlx.value_and_jacobian_per_task`, one pass per task.
        """
        return self.task_apply is not None

    def task_output(self, t: int, *inputs: Any) -> Any:
        """Task ``t``'s output from a pass of its own: ``task_apply(params, t, *inputs)``."""
        if self.task_apply is None:
            raise ValueError(
                "this FunctionalModel has no task_apply: build it with "
                "FunctionalModel(apply, params, task_apply=...) to run one task alone."
            )
        return self.task_apply(self.params(), t, *inputs)

    def __call__(self, *inputs: Any) -> Any:
        return self.apply(self.params(), *inputs)
