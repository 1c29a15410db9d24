"""One jit-compiled training step: task losses, the lazy Jacobian, any mtlx method in an optax chain.

The model is split once (``nnx.split``) into a static graph and two pytrees of plain arrays: the
parameters (``nnx.Param``) and the rest of the model's state (batch statistics, dropout PRNG keys
and counts). The step is a plain ``jax.jit`` function that merges them inside the trace, as
flax's performance guide recommends (``nnx.jit`` re-traverses the module graph on every call), and
that scans over ``steps_per_call`` batches so that one host call runs several steps.

Multi-device: with a ``jax.sharding.Mesh``, the batch is sharded over the mesh's ``"data"`` axis
and the state is replicated (data parallelism; XLA inserts the gradient all-reduce). With
``shard_tasks=True`` the per-task Jacobian rows are also sharded over the mesh's ``"task"`` axis.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import mtlx
from mtlx import models
from mtlx.jacobian import Jacobian
from mtlx.training import losses as losses_lib
from mtlx.training import metrics as metrics_lib
from mtlx.training import sharding as sharding_lib
from mtlx.training.tasks import Task, check_tasks

PyTree = Any
Batch = Mapping[str, Any]


class TrainState(NamedTuple):
    """Everything a training run carries from step to step (and saves in a checkpoint)."""

    step: jax.Array  # int32 scalar: optimizer steps taken
    params: PyTree  # nnx.Param state of the model, plain arrays
    model_state: PyTree  # every other model variable: batch statistics, dropout PRNG keys/counts
    opt_state: PyTree  # the optax chain's state (the mtlx method's state included)


class TrainStep(NamedTuple):
    """What :func:`make_train_step` returns.

    Attributes:
      init: ``init() -> TrainState`` from the model's current variables.
      step: ``step(state, batches) -> (state, losses)``, jitted; every leaf of ``batches`` has a
        leading axis of ``steps_per_call`` batches; ``losses`` is ``(steps_per_call, T)``. The
        input state is donated (do not reuse it after the call).
      graphdef: the model's static graph (``nnx.merge(graphdef, state.params, state.model_state)``
        rebuilds the model).
    """

    init: Callable[[], TrainState]
    step: Callable[[TrainState, Batch], tuple[TrainState, jax.Array]]
    graphdef: Any


def multitask_jacobian(
    loss_fn: Callable[..., Any], *, chunk_size: int | None = None
) -> Callable[..., tuple[Any, Jacobian]]:
    """The engine for a model's parameter state: ``(params, *args) -> ((losses, aux), jac)``.

    Parameters under ``heads`` are task-specific (:func:`mtlx.models.is_shared`): they get their
    own task's gradient and stay out of the Gramian, whether stacked with a task axis
    (:class:`mtlx.models.TaskHeads`) or one module per task (:class:`mtlx.models.PerTaskHeads`, e.g.
    SegNet's segmentation / depth / normal heads).

    Args:
      loss_fn: ``loss_fn(params, *args) -> (losses (T,), aux)``.
      chunk_size: see :func:`mtlx.value_and_jacobian`.
    """
    return mtlx.value_and_jacobian(
        loss_fn, shared=models.is_shared, has_aux=True, chunk_size=chunk_size
    )


def _check_has_params(params: PyTree) -> None:
    if not jax.tree.leaves(params):
        raise ValueError("the model has no nnx.Param to train.")


def make_train_step(
    model: nnx.Module,
    tasks: Sequence[Task],
    tx: optax.GradientTransformation,
    *,
    input_key: str = "image",
    steps_per_call: int = 1,
    chunk_size: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
    shard_tasks: bool = False,
    donate: bool = True,
) -> TrainStep:
    """Builds the jitted multi-task training step for ``model`` and the optax chain ``tx``.

    Per step: the ``(T,)`` task losses and the engine's lazy Jacobian
    (:func:`multitask_jacobian`, heads task-specific by :func:`mtlx.models.is_shared`), then
    ``updates, opt_state = tx.update(jac, opt_state, params, task_losses=losses)`` and
    ``params = optax.apply_updates(params, updates)``. A loss-only method therefore costs one
    backward pass, a Gramian method T batched ones.

    Args:
      model: a multi-task model whose call returns a tuple of T outputs (``mtlx.models``). Its
        current variables are the initial state; switch BatchNorm/dropout models to
        ``model.train()`` first.
      tasks: the T tasks, in the order of the model's outputs.
      tx: the optax chain, an mtlx method first, e.g. ``optax.chain(mtlx.pcgrad(), optax.adam(1e-3))``.
      input_key: the batch key of the model's input.
      steps_per_call: batches per call, run by ``jax.lax.scan`` (fewer host round trips).
      chunk_size: forwarded to :func:`mtlx.value_and_jacobian` (rows live at once).
      mesh: data-parallel mesh from :func:`mtlx.training.sharding.make_mesh`; ``None``: one device.
      shard_tasks: shard the Jacobian's task axis over the mesh's ``"task"`` axis. The rows are
        then materialised (T backward passes, also for loss-only methods).
      donate: donate the input state's buffers to the output state.

    Returns:
      A :class:`TrainStep`.
    """
    tasks = check_tasks(tasks)
    if steps_per_call < 1:
        raise ValueError(f"steps_per_call must be positive; got {steps_per_call}.")
    if shard_tasks:
        if mesh is None or sharding_lib.TASK_AXIS not in mesh.axis_names:
            raise ValueError(
                "shard_tasks=True needs a mesh with a 'task' axis (make_mesh(task=...))."
            )
        task_devices = mesh.shape[sharding_lib.TASK_AXIS]
        if len(tasks) % task_devices:
            raise ValueError(
                f"{len(tasks)} tasks cannot be split evenly over a task axis of {task_devices} devices."
            )
    graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
    params, model_state = nnx.as_pure(params), nnx.as_pure(model_state)
    _check_has_params(params)

    def loss_fn(params, model_state, batch):
        module = nnx.merge(graphdef, params, model_state)
        outputs = module(batch[input_key])
        task_losses = losses_lib.task_losses(tasks, outputs, batch)
        return task_losses, nnx.as_pure(nnx.state(module, nnx.Not(nnx.Param)))

    engine = multitask_jacobian(loss_fn, chunk_size=chunk_size)

    def one_step(state: TrainState, batch: Batch) -> tuple[TrainState, jax.Array]:
        (task_losses, model_state), jac = engine(state.params, state.model_state, batch)
        if shard_tasks:
            jac = sharding_lib.shard_task_axis(jac, mesh)
        updates, opt_state = tx.update(jac, state.opt_state, state.params, task_losses=task_losses)
        params = optax.apply_updates(state.params, updates)
        new_state = TrainState(state.step + 1, params, model_state, opt_state)
        if mesh is not None:
            new_state = sharding_lib.replicate_constraint(new_state, mesh)
        return new_state, task_losses

    def step(state: TrainState, batches: Batch) -> tuple[TrainState, jax.Array]:
        return jax.lax.scan(one_step, state, batches)

    def init() -> TrainState:
        state = TrainState(jnp.zeros((), jnp.int32), params, model_state, tx.init(params))
        return sharding_lib.replicate(state, mesh) if mesh is not None else state

    jitted = jax.jit(step, donate_argnums=(0,) if donate else ())
    return TrainStep(init=init, step=jitted, graphdef=graphdef)


def make_eval_step(
    model: nnx.Module, tasks: Sequence[Task], *, input_key: str = "image"
) -> Callable[[TrainState, Batch], tuple[tuple[dict[str, jax.Array], ...], jax.Array]]:
    """A jitted ``eval_step(state, batch) -> (metric statistics, (T,) losses)`` in eval mode.

    The statistics sum over batches (see :func:`mtlx.training.metrics.metric_stats`). BatchNorm
    uses its running averages and dropout is off: the graph is split from ``model.eval()``.
    """
    tasks = check_tasks(tasks)
    model.eval()
    try:
        graphdef = nnx.split(model, nnx.Param, ...)[0]
    finally:
        model.train()

    @jax.jit
    def eval_step(state: TrainState, batch: Batch):
        module = nnx.merge(graphdef, state.params, state.model_state)
        outputs = module(batch[input_key])
        stats = metrics_lib.metric_stats(tasks, outputs, batch)
        return stats, losses_lib.task_losses(tasks, outputs, batch)

    return eval_step
