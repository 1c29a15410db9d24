"""One jit-compiled training step: task losses, the lazy Jacobian, any mtlx method in an optax chain.

The model is split once (``nnx.split``) into a static graph and two pytrees of plain arrays: the
parameters (``nnx.Param``) and the rest of the model's state (batch statistics, dropout PRNG keys
and counts). The step is a plain ``jax.jit`` function that merges them inside the trace, as
flax's performance guide recommends (``nnx.jit`` re-traverses the module graph on every call), and
that scans over ``steps_per_call`` batches so that one host call runs several steps.

Observations: ``make_train_step(..., observe=fn)`` calls ``fn(ctx)`` inside the traced step with a
:class:`StepContext` (the step number, the parameters, model state and optimizer state before and
after the update, the batch, the task losses, the lazy Jacobian and the updates); whatever pytree
it returns comes back stacked over the scanned steps, with the losses, in the same device call.

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


class StepContext(NamedTuple):
    """What an ``observe`` function sees of one training step (inside the trace: arrays are
    tracers; use ``jax.lax.cond`` for work on some steps only).

    Attributes:
      step: int32 scalar, the optimizer steps taken before this one (0 on the first step).
      params: the parameters before the update (the ones the losses and ``jac`` are taken at).
      model_state: the model's other variables before the step (batch statistics, PRNG counts).
      batch: this step's batch.
      losses: ``(T,)`` float32 task losses.
      jac: the lazy :class:`mtlx.Jacobian` the engine returned. Asking it for rows or the
        Gramian costs T more backward passes (XLA may share them with the method's when both are
        in the same trace); for statistics on every step, put ``mtlx.conflict_monitor`` in the
        chain instead, which hands its rows on to the method.
      opt_state: the optax chain's state before the update.
      new_opt_state: the optax chain's state after the update.
      updates: the updates ``tx`` returned (added to ``params``).
      new_params: the parameters after the update.
      new_model_state: the model's other variables after the forward pass.
      tasks: the T tasks (static).
      graphdef: the model's static graph (static); see :meth:`model`.
      input_key: the batch key of the model's input (static).
    """

    step: jax.Array
    params: PyTree
    model_state: PyTree
    batch: Batch
    losses: jax.Array
    jac: Jacobian
    opt_state: PyTree
    new_opt_state: PyTree
    updates: PyTree
    new_params: PyTree
    new_model_state: PyTree
    tasks: tuple[Task, ...]
    graphdef: Any
    input_key: str

    def model(self, params: PyTree | None = None) -> nnx.Module:
        """The model with ``params`` (default: :attr:`params`) and :attr:`model_state`."""
        return nnx.merge(self.graphdef, self.params if params is None else params, self.model_state)

    def outputs(self, params: PyTree | None = None, batch: Batch | None = None) -> Any:
        """The model's per-task outputs on ``batch`` (default: this step's) with ``params``."""
        batch = self.batch if batch is None else batch
        return self.model(params)(batch[self.input_key])


class TrainStep(NamedTuple):
    """What :func:`make_train_step` returns.

    Attributes:
      init: ``init() -> TrainState`` from the model's current variables.
      step: ``step(state, batches) -> (state, losses)``, compiled; every leaf of ``batches`` has a
        leading axis of ``steps_per_call`` batches; ``losses`` is ``(steps_per_call, T)``. With an
        ``observe`` function: ``step(state, batches) -> (state, losses, observations)``, every
        leaf of ``observations`` stacked to ``(steps_per_call, ...)``. The input state is donated
        (do not reuse it after the call).
      graphdef: the model's static graph (``nnx.merge(graphdef, state.params, state.model_state)``
        rebuilds the model).
      observes: whether ``step`` returns observations.
    """

    init: Callable[[], TrainState]
    step: Callable[[TrainState, Batch], tuple[Any, ...]]
    graphdef: Any
    observes: bool = False


def multitask_jacobian(
    loss_fn: Callable[..., Any], *, chunk_size: int | None = None, shared: Any = None
) -> Callable[..., tuple[Any, Jacobian]]:
    """The engine for a model's parameter state: ``(params, *args) -> ((losses, aux), jac)``.

    Parameters under ``heads`` are task-specific (:func:`mtlx.models.is_shared`): they get their
    own task's gradient and stay out of the Gramian, whether stacked with a task axis
    (:class:`mtlx.models.TaskHeads`) or one module per task (:class:`mtlx.models.PerTaskHeads`, e.g.
    SegNet's segmentation / depth / normal heads).

    Args:
      loss_fn: ``loss_fn(params, *args) -> (losses (T,), aux)``.
      chunk_size: see :func:`mtlx.value_and_jacobian`.
      shared: which parameters are shared (see :func:`mtlx.value_and_jacobian`); default
        :func:`mtlx.models.is_shared`.
    """
    return mtlx.value_and_jacobian(
        loss_fn,
        shared=models.is_shared if shared is None else shared,
        has_aux=True,
        chunk_size=chunk_size,
    )


def _per_task_engine(
    graphdef: Any, tasks: Sequence[Task], input_key: str, chunk_size: int | None, shared: Any
) -> Callable[..., tuple[Any, Any]]:
    """The engine of a model that runs each task alone (``model.task_output(t, x)``): one pass
    per task, all T rows from one backward pass (:func:`mtlx.value_and_jacobian_per_task`)."""
    if chunk_size is not None:
        raise ValueError(
            "chunk_size does not apply to a model trained one pass per task (has_task_outputs): "
            "its T rows come from one backward pass through the T passes. Leave chunk_size=None."
        )

    def task_loss(params, t, model_state, batch):
        module = nnx.merge(graphdef, params, model_state)
        loss = tasks[t].loss(module.task_output(t, batch[input_key]), batch, t, None)
        return loss, nnx.as_pure(nnx.state(module, nnx.Not(nnx.Param)))

    per_task = mtlx.value_and_jacobian_per_task(
        task_loss,
        len(tasks),
        shared=models.is_shared if shared is None else shared,
        has_aux=True,
    )

    def engine(params, model_state, batch):
        # Each pass starts from the same model state; the last task's pass gives the new one
        # (running statistics of a BatchNorm see every task's pass only in a per-task model).
        (losses, states), jac = per_task(params, model_state, batch)
        return (losses, states[-1]), jac

    return engine


def _check_has_params(params: PyTree) -> None:
    if not jax.tree.leaves(params):
        raise ValueError("the model has no nnx.Param to train.")


def make_train_step(
    model: nnx.Module,
    tasks: Sequence[Task | Any],
    tx: optax.GradientTransformation,
    *,
    input_key: str = "image",
    steps_per_call: int = 1,
    chunk_size: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
    shard_tasks: bool = False,
    donate: bool = True,
    shared: Any = None,
    observe: Callable[[StepContext], PyTree] | None = None,
    scan: bool = True,
    compiler_options: Mapping[str, Any] | None = None,
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
      shared: which parameter leaves are shared: a predicate ``(path, leaf) -> bool`` on the
        model's parameter state or a bool pytree of its structure (see
        :func:`mtlx.value_and_jacobian`); default :func:`mtlx.models.is_shared` (all but
        ``heads``).
        A model with ``has_task_outputs = True`` and a ``task_output(t, x)`` method (e.g.
        :class:`~mtlx.training.FunctionalModel` with ``task_apply``: Recon's split models) is
        trained one pass per task (:func:`mtlx.value_and_jacobian_per_task`).
      observe: ``observe(ctx: StepContext) -> pytree``, called inside the jitted, scanned step;
        its outputs come back stacked over the ``steps_per_call`` steps as a third result of
        ``step``. It must not change the training: it reads, it does not write.
      scan: run the ``steps_per_call`` steps of a call as one ``jax.lax.scan`` (one compiled loop),
        or, with ``False``, as ``steps_per_call`` calls of the jitted single step, dispatched
        without waiting and stacked on the device (the same results; one host sync per call
        either way). XLA:CPU runs convolutions and batched VJPs (Jacobian rows) inside a loop
        several times slower than outside one: prefer ``False`` for such models on CPU. With
        ``steps_per_call=1`` there is no loop.
      compiler_options: ``jax.jit``'s compiler options for the step; default
        :func:`mtlx.jit_compiler_options` for the mesh's (or the default) backend. Pass ``{}``
        when the step runs inside another ``jax.jit`` (nested jits take none) and give the
        options to that one.

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

    if getattr(model, "has_task_outputs", False):
        engine = _per_task_engine(graphdef, tasks, input_key, chunk_size, shared)
    else:
        engine = multitask_jacobian(loss_fn, chunk_size=chunk_size, shared=shared)
    if observe is not None and not callable(observe):
        raise ValueError(f"observe must be a function ctx -> pytree; got {observe!r}.")

    def one_step(state: TrainState, batch: Batch) -> tuple[TrainState, Any]:
        (task_losses, model_state), jac = engine(state.params, state.model_state, batch)
        if shard_tasks:
            jac = sharding_lib.shard_task_axis(jac, mesh)
        updates, opt_state = tx.update(jac, state.opt_state, state.params, task_losses=task_losses)
        params = optax.apply_updates(state.params, updates)
        new_state = TrainState(state.step + 1, params, model_state, opt_state)
        if mesh is not None:
            new_state = sharding_lib.replicate_constraint(new_state, mesh)
        if observe is None:
            return new_state, task_losses
        ctx = StepContext(
            step=state.step,
            params=state.params,
            model_state=state.model_state,
            batch=batch,
            losses=task_losses,
            jac=jac,
            opt_state=state.opt_state,
            new_opt_state=opt_state,
            updates=updates,
            new_params=params,
            new_model_state=model_state,
            tasks=tasks,
            graphdef=graphdef,
            input_key=input_key,
        )
        return new_state, (task_losses, observe(ctx))

    def results(state: TrainState, out: Any) -> tuple[Any, ...]:
        if observe is None:
            return state, out
        losses, observations = out
        return state, losses, observations

    def scanned(state: TrainState, batches: Batch) -> tuple[Any, ...]:
        return results(*jax.lax.scan(one_step, state, batches))

    def init() -> TrainState:
        # Copies: the step donates its input state, and the model's own arrays must survive it
        # (a caller may still use the model it passed in).
        fresh = lambda tree: jax.tree.map(
            lambda x: x.copy() if isinstance(x, jax.Array) else x, tree
        )
        p, ms = fresh(params), fresh(model_state)
        state = TrainState(jnp.zeros((), jnp.int32), p, ms, tx.init(p))
        return sharding_lib.replicate(state, mesh) if mesh is not None else state

    donate_argnums = (0,) if donate else ()
    if compiler_options is None:
        platform = mesh.devices.flat[0].platform if mesh is not None else None
        compiler_options = mtlx.jit_compiler_options(platform)
    options = dict(compiler_options)
    if scan and steps_per_call > 1:
        step = jax.jit(scanned, donate_argnums=donate_argnums, compiler_options=options)
    else:
        single = jax.jit(one_step, donate_argnums=donate_argnums, compiler_options=options)

        def step(state: TrainState, batches: Batch) -> tuple[Any, ...]:
            # One jitted step per batch, dispatched without waiting for the previous one: the
            # outputs stay on the device and are stacked there, so the host syncs once per call.
            outs = []
            for i in range(jax.tree.leaves(batches)[0].shape[0]):
                state, out = single(state, jax.tree.map(lambda x, i=i: x[i], batches))
                outs.append(out)
            return results(state, jax.tree.map(lambda *xs: jnp.stack(xs), *outs))

    return TrainStep(init=init, step=step, graphdef=graphdef, observes=observe is not None)


def make_eval_step(
    model: nnx.Module, tasks: Sequence[Task], *, input_key: str = "image"
) -> Callable[..., tuple[tuple[dict[str, jax.Array], ...], jax.Array]]:
    """A jitted ``eval_step(state, batch, mask=None) -> (metric statistics, (T,) losses)``.

    The statistics sum over batches (see :func:`mtlx.training.metrics.metric_stats`); ``mask``
    ``(N,)`` leaves padding examples out of both. BatchNorm uses its running averages and dropout
    is off: the graph is split from ``model.eval()``.
    """
    tasks = check_tasks(tasks)
    model.eval()
    try:
        graphdef = nnx.split(model, nnx.Param, ...)[0]
    finally:
        model.train()

    @jax.jit
    def eval_step(state: TrainState, batch: Batch, mask: jax.Array | None = None):
        module = nnx.merge(graphdef, state.params, state.model_state)
        outputs = module(batch[input_key])
        stats = metrics_lib.metric_stats(tasks, outputs, batch, mask)
        return stats, losses_lib.task_losses(tasks, outputs, batch, mask)

    return eval_step
