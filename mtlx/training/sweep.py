"""K models at once: one run of the trainer vmapped over a grid of hyperparameters.

The brute-force scalarization baseline (every weight vector of :func:`mtlx.simplex_grid`), a
temperature sweep of UW-SO, the T single-task runs of a Δm base (one-hot weights), or a
learning-rate grid are K runs that differ only in a numeric hyperparameter of the method or the
optimizer. :func:`train_sweep` trains them as ONE jitted step over K stacked models: the method
(and, for a learning-rate grid, the optimizer) goes through ``optax.inject_hyperparams`` so the
swept values live in the optimizer state, the model, optimizer and method states carry a leading
K axis, and ``jax.vmap`` batches the K forward and backward passes. The K models see the same
initialisation and the same batches (the config's seed), so model ``k`` is the run of the config
with hyperparameters ``k`` (equal up to floating-point summation order).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import mtlx
from mtlx import data
from mtlx.training import config as config_lib
from mtlx.training import datasets as datasets_lib
from mtlx.training import loop as loop_lib
from mtlx.training import metrics as metrics_lib
from mtlx.training import step as step_lib
from mtlx.training.tasks import check_tasks

PyTree = Any


@dataclasses.dataclass
class SweepResult:
    """What :func:`train_sweep` returns: one entry per swept model, in the grid's order."""

    config: config_lib.TrainConfig
    tasks: tuple[Any, ...]
    hyperparams: dict[str, np.ndarray]  # {name: (K, ...)} the swept values
    results: list[dict[str, dict[str, float]]]  # per model: {task: {metric: value}}
    eval_losses: list[dict[str, float]]  # per model: {task: mean test loss}
    state: step_lib.TrainState  # the K final states, every leaf with a leading K axis
    seconds: float  # wall time of the whole sweep, compilation included

    def __len__(self) -> int:
        return len(self.results)


def _swept_values(hyperparams: Mapping[str, Any]) -> tuple[dict[str, jax.Array], int]:
    if not hyperparams:
        raise ValueError(
            "train_sweep needs something to sweep: hyperparams={'weights': grid} (the method's) "
            "or learning_rate=[...] (the optimizer's)."
        )
    values = {name: jnp.asarray(v) for name, v in hyperparams.items()}
    sizes = {name: (v.shape[0] if v.ndim else None) for name, v in values.items()}
    if None in sizes.values() or len(set(sizes.values())) != 1:
        raise ValueError(
            f"every swept hyperparameter needs the same leading axis K (one value per model); got "
            f"shapes { {n: tuple(v.shape) for n, v in values.items()} }."
        )
    return values, next(iter(sizes.values()))


def _injected_method(
    config: config_lib.TrainConfig, num_tasks: int, swept: Mapping[str, jax.Array]
) -> optax.GradientTransformation:
    """The config's method with the swept hyperparameters in its state (``inject_hyperparams``)."""
    name = config_lib.resolve_method_name(config.method)
    factory = getattr(mtlx, name)
    kwargs = config_lib.method_kwargs(config, num_tasks)
    unknown = [n for n in swept if n not in config_lib.factory_parameters(factory)]
    if unknown:
        raise ValueError(
            f"mtlx.{name} has no hyperparameter {unknown}; its arguments: "
            f"{', '.join(config_lib.factory_parameters(factory))}."
        )
    static = tuple(k for k in kwargs if k not in swept)
    first = {n: v[0] for n, v in swept.items()}
    return optax.inject_hyperparams(factory, static_args=static)(**{**kwargs, **first})


def _injected_optimizer(
    config: config_lib.TrainConfig, num_tasks: int, learning_rate: jax.Array
) -> optax.GradientTransformation:
    """The config's optimizer with its learning rate in its state (``inject_hyperparams``)."""
    if config.optimizer == "adatask":
        return optax.inject_hyperparams(mtlx.adatask, static_args=("num_tasks",))(
            learning_rate, num_tasks=num_tasks, **config.optimizer_kwargs
        )
    # The name is resolved (and a bad name or argument rejected) as train() does it.
    config_lib.make_optimizer(config.optimizer, config.learning_rate, **config.optimizer_kwargs)
    factory = getattr(optax, config.optimizer)
    return optax.inject_hyperparams(factory)(learning_rate, **config.optimizer_kwargs)


def _replace_injected(state: Any, values: Mapping[str, jax.Array]) -> Any:
    """An ``inject_hyperparams`` state with ``values`` (one model's) in place of its own."""
    hyperparams = getattr(state, "hyperparams", None)
    if not values:
        return state
    if not isinstance(hyperparams, dict) or not set(values) <= set(hyperparams):
        raise AssertionError(f"no injected hyperparameters {sorted(values)} in {type(state)}")
    new = {**hyperparams, **{n: jnp.asarray(v, hyperparams[n].dtype) for n, v in values.items()}}
    return state._replace(hyperparams=new)


def _set_hyperparams(
    opt_state: PyTree, method_values: Mapping[str, jax.Array], optimizer_values: Mapping[str, Any]
) -> PyTree:
    """``opt_state`` with one model's swept values: the method's in the method's state (the
    chain's second-to-last), the learning rate in the optimizer's (the last, or the whole state
    when AdaTask is the chain)."""
    if hasattr(opt_state, "hyperparams"):  # optimizer="adatask": no chain, no method
        return _replace_injected(opt_state, optimizer_values)
    *head, method_state, optimizer_state = opt_state
    return (
        *head,
        _replace_injected(method_state, method_values),
        _replace_injected(optimizer_state, optimizer_values),
    )


def train_sweep(
    config: config_lib.TrainConfig,
    hyperparams: Mapping[str, Any] | None = None,
    *,
    learning_rate: Any = None,
    dataset: datasets_lib.Dataset | None = None,
) -> SweepResult:
    """Trains K models at once, model ``k`` with the hyperparameters ``hyperparams[...][k]``.

    Example: the 36-point scalarization grid of 3 tasks in one run::

      grid = mtlx.simplex_grid(3)                                   # (36, 3)
      config = TrainConfig(method="scalarization", method_kwargs={"weights": grid[0]}, ...)
      sweep = train_sweep(config, {"weights": grid})                # sweep.results[k]

    and a learning-rate grid of the config's optimizer (any optax optimizer, or AdaTask)::

      sweep = train_sweep(config, learning_rate=[1e-4, 1e-3, 1e-2])

    Args:
      config: the run; its method's other arguments (``method_kwargs``) are fixed.
      hyperparams: ``{name: values}``, each with a leading axis K: numeric arguments of the
        method's factory (``weights`` of ``scalarization``, ``temperature`` of ``uw_so``, ...).
        They must not change the shape of the method's state.
      learning_rate: the optimizer's learning rate per model, shape (K,) (``config.optimizer``
        with ``config.optimizer_kwargs``; ``config.learning_rate`` is then unused). The result's
        ``hyperparams["learning_rate"]`` holds it.
      dataset: use this dataset instead of loading ``config.dataset``.

    Returns:
      A :class:`SweepResult` (per model: test metrics and losses; the K final states).

    Raises:
      ValueError: nothing to sweep, an unknown hyperparameter, values of different K, or
        unsupported settings.
      NonFiniteLossError: a model's loss became NaN or infinite (the message names the task).
    """
    start = time.perf_counter()
    config = config.validate()
    if config.num_devices is not None:
        raise ValueError("train_sweep runs on one device: leave num_devices=None.")
    if config.skip_nonfinite:
        raise ValueError(
            "train_sweep does not run the non-finite guard: leave skip_nonfinite=False (a "
            "non-finite loss stops the sweep with the task's name)."
        )
    if config.conflict_monitor_every:
        raise ValueError(
            "train_sweep does not run the conflict monitor: leave conflict_monitor_every=0 (or "
            "train the runs one by one with train())."
        )
    swept_lr: dict[str, Any] = {} if learning_rate is None else {"learning_rate": learning_rate}
    if hyperparams and "learning_rate" in hyperparams and swept_lr:
        raise ValueError(
            "hyperparams['learning_rate'] (the method's) and learning_rate= (the optimizer's) "
            "would share one name in the result: sweep them in separate calls."
        )
    if config.optimizer == "adatask" and hyperparams:
        raise ValueError(
            "AdaTask has no weighting method whose hyperparameters could be swept; with "
            "optimizer='adatask' sweep only learning_rate=."
        )
    values, num_models = _swept_values({**(hyperparams or {}), **swept_lr})
    method_values = {n: v for n, v in values.items() if n not in swept_lr}
    optimizer_values = {n: v for n, v in values.items() if n in swept_lr}
    ds = (
        dataset
        if dataset is not None
        else datasets_lib.load(config.dataset, **config.dataset_kwargs)
    )
    tasks = check_tasks(ds.tasks)
    model = loop_lib.model_for(config, ds)
    model.train()
    # The same chain as train(): random row weights, the method, the optimizer.
    num_tasks = len(tasks)
    tx = config_lib.make_tx(
        config,
        num_tasks,
        method=(
            _injected_method(config, num_tasks, method_values)
            if method_values and config.optimizer != "adatask"
            else None
        ),
        optimizer=(
            _injected_optimizer(config, num_tasks, optimizer_values["learning_rate"][0])
            if optimizer_values
            else None
        ),
    )
    train_step = step_lib.make_train_step(
        model,
        tasks,
        tx,
        input_key=ds.input_key,
        steps_per_call=config.steps_per_call,
        chunk_size=config.chunk_size,
        donate=False,
        compiler_options={},  # runs inside the sweep's jit, which takes them
    )
    eval_step = step_lib.make_eval_step(model, tasks, input_key=ds.input_key)
    one = train_step.init()
    swept = {n: np.asarray(v) for n, v in values.items()}  # kept: the step donates the state
    state = jax.jit(
        jax.vmap(
            lambda m, o: one._replace(opt_state=_set_hyperparams(one.opt_state, m, o)),
        )
    )(method_values, optimizer_values)
    step = jax.jit(
        jax.vmap(train_step.step, in_axes=(0, None)),
        donate_argnums=(0,),
        compiler_options=mtlx.jit_compiler_options(),
    )
    batcher = data.batches(ds.train, config.batch_size, seed=config.seed)
    done = 0
    while done < config.num_steps:
        batches = loop_lib.stack_batches([next(batcher) for _ in range(config.steps_per_call)])
        state, losses = step(state, batches)
        losses = np.asarray(jax.device_get(losses))  # (K, steps, T)
        for k in range(num_models):
            loop_lib.check_finite_losses(losses[k], tasks, done + 1)
        done += config.steps_per_call

    eval_batch_size = min(config.eval_batch_size, loop_lib.source_size(ds.test))
    batched_eval = jax.jit(jax.vmap(eval_step, in_axes=(0, None, None)))
    test_batches = data.batches(
        ds.test, eval_batch_size, shuffle=False, num_epochs=1, drop_remainder=False
    )
    total, mean_losses = loop_lib.accumulate_evaluation(
        batched_eval, state, test_batches, eval_batch_size
    )
    results = [
        metrics_lib.finalize(tasks, jax.tree.map(lambda x, k=k: x[k], total))
        for k in range(num_models)
    ]
    eval_losses = [
        {t.name: float(v) for t, v in zip(tasks, mean_losses[k])} for k in range(num_models)
    ]
    return SweepResult(
        config,
        tasks,
        swept,
        results,
        eval_losses,
        state,
        time.perf_counter() - start,
    )
