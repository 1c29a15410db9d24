"""K models at once: one run of the trainer vmapped over a grid of method hyperparameters.

The brute-force scalarization baseline (every weight vector of :func:`mtlx.simplex_grid`), a
temperature sweep of UW-SO, or the T single-task runs of a Δm base (one-hot weights) are K runs
that differ only in a numeric hyperparameter of the method. :func:`train_sweep` trains them as ONE
jitted step over K stacked models: the method goes through ``optax.inject_hyperparams`` so the
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
            "train_sweep needs at least one hyperparameter to sweep, e.g. weights=grid."
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


def _set_hyperparams(opt_state: PyTree, values: Mapping[str, jax.Array]) -> PyTree:
    """``opt_state`` (the chain's tuple) with the method's injected hyperparameters replaced by
    ``values`` (one model's); the method's state is the one that holds them."""

    def replace(state: Any) -> Any:
        hyperparams = getattr(state, "hyperparams", None)
        if not isinstance(hyperparams, dict) or not set(values) <= set(hyperparams):
            return state
        new = {
            **hyperparams,
            **{n: jnp.asarray(v, hyperparams[n].dtype) for n, v in values.items()},
        }
        return state._replace(hyperparams=new)

    return tuple(replace(state) for state in opt_state)


def train_sweep(
    config: config_lib.TrainConfig,
    hyperparams: Mapping[str, Any],
    *,
    dataset: datasets_lib.Dataset | None = None,
) -> SweepResult:
    """Trains K models at once, model ``k`` with the method hyperparameters ``hyperparams[...][k]``.

    Example: the 36-point scalarization grid of 3 tasks in one run::

      grid = mtlx.simplex_grid(3)                                   # (36, 3)
      config = TrainConfig(method="scalarization", method_kwargs={"weights": grid[0]}, ...)
      sweep = train_sweep(config, {"weights": grid})                # sweep.results[k]

    Args:
      config: the run; its method's other arguments (``method_kwargs``) are fixed.
      hyperparams: ``{name: values}``, each with a leading axis K: numeric arguments of the
        method's factory (``weights`` of ``scalarization``, ``temperature`` of ``uw_so``, ...).
        They must not change the shape of the method's state.
      dataset: use this dataset instead of loading ``config.dataset``.

    Returns:
      A :class:`SweepResult` (per model: test metrics and losses; the K final states).

    Raises:
      ValueError: an unknown hyperparameter, values of different K, or unsupported settings.
      NonFiniteLossError: a model's loss became NaN or infinite (the message names the task).
    """
    start = time.perf_counter()
    config = config.validate()
    if config.num_devices is not None:
        raise ValueError("train_sweep runs on one device: leave num_devices=None.")
    values, num_models = _swept_values(hyperparams)
    ds = (
        dataset
        if dataset is not None
        else datasets_lib.load(config.dataset, **config.dataset_kwargs)
    )
    tasks = check_tasks(ds.tasks)
    model = loop_lib.model_for(config, ds)
    model.train()
    if config.optimizer == "adatask":
        raise ValueError(
            "train_sweep sweeps a weighting method's hyperparameters; AdaTask has no weighting "
            "method: sweep optimizer='adatask' runs one by one with train()."
        )
    # The same chain as train(): random row weights, the method, the optimizer.
    tx = config_lib.make_tx(config, len(tasks), method=_injected_method(config, len(tasks), values))
    train_step = step_lib.make_train_step(
        model,
        tasks,
        tx,
        input_key=ds.input_key,
        steps_per_call=config.steps_per_call,
        chunk_size=config.chunk_size,
        donate=False,
    )
    eval_step = step_lib.make_eval_step(model, tasks, input_key=ds.input_key)
    one = train_step.init()
    swept = {n: np.asarray(v) for n, v in values.items()}  # kept: the step donates the state
    state = jax.jit(jax.vmap(lambda v: one._replace(opt_state=_set_hyperparams(one.opt_state, v))))(
        values
    )
    step = jax.jit(jax.vmap(train_step.step, in_axes=(0, None)), donate_argnums=(0,))
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
