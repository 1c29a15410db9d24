"""The training loop: batches in, jitted steps, finite-loss checks, logs, evaluation, checkpoints.

:func:`train` runs one :class:`~mtlx.training.config.TrainConfig` end to end and returns the final
per-task metrics (and Δm when the config has single-task baselines). Every jitted call runs
``steps_per_call`` optimizer steps; its ``(steps_per_call, T)`` task losses come back to the host,
where they are checked (a NaN or infinite loss stops the run with an error that names the task),
averaged for the progress bar and written as JSON lines (``workdir/log.jsonl``).

Resuming is bit-exact: a checkpoint holds the whole :class:`~mtlx.training.step.TrainState` and
the data position (:func:`mtlx.data.batches` makes batch ``i`` a pure function of the seed and
``i``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from mtlx import data
from mtlx.training import checkpoint as checkpoint_lib
from mtlx.training import config as config_lib
from mtlx.training import datasets as datasets_lib
from mtlx.training import metrics as metrics_lib
from mtlx.training import sharding as sharding_lib
from mtlx.training import step as step_lib
from mtlx.training.tasks import Task

PyTree = Any


class NonFiniteLossError(ValueError):
    """A task loss became NaN or infinite during training."""


class RunResult(NamedTuple):
    """What :func:`train` returns."""

    config: config_lib.TrainConfig
    tasks: tuple[Task, ...]
    state: step_lib.TrainState  # the final state
    results: dict[str, dict[str, float]]  # final evaluation: {task: {metric: value}}
    eval_losses: dict[str, float]  # final evaluation loss per task
    delta_m: float | None  # Δm (%) against config.baselines; None without baselines
    history: list[dict[str, Any]]  # every logged record
    seconds: float  # wall time of the run (compilation included)


class JsonLinesLogger:
    """Appends one JSON object per line to ``path`` (``None``: keeps records in memory only)."""

    def __init__(self, path: str | os.PathLike | None):
        self.records: list[dict[str, Any]] = []
        self._file = None
        if path is not None:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, record: Mapping[str, Any]) -> None:
        record = {
            k: (float(v) if isinstance(v, (np.floating, np.integer)) else v)
            for k, v in record.items()
        }
        self.records.append(record)
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def check_finite_losses(losses: np.ndarray, tasks: Sequence[Task], first_step: int) -> None:
    """Raises :class:`NonFiniteLossError` naming the task and step of the first NaN/inf loss.

    Args:
      losses: ``(steps, T)`` task losses of consecutive steps.
      tasks: the T tasks.
      first_step: the (1-based) step number of ``losses[0]``.
    """
    bad = ~np.isfinite(losses)
    if bad.any():
        i, t = np.argwhere(bad)[0]
        names = [tasks[j].name for j in np.flatnonzero(bad[i])]
        raise NonFiniteLossError(
            f"the loss of task {tasks[t].name!r} is {losses[i, t]} at step {first_step + i} "
            f"(non-finite losses: {names}); training stopped. Lower the learning rate, or check "
            "the inputs and targets for NaN/inf values."
        )


def _pad(batch: Mapping[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Pads a short batch to ``size``: integer targets with -1 and float arrays with 0.

    Every metric and loss ignores those values (label -1, depth 0, normal 0), and padded images
    only produce ignored predictions, so the last batch needs no second compilation.
    """
    out = {}
    for k, x in batch.items():
        missing = size - x.shape[0]
        fill = -1 if np.issubdtype(x.dtype, np.integer) else 0
        pad = np.full((missing, *x.shape[1:]), fill, x.dtype)
        out[k] = np.concatenate([x, pad]) if missing else x
    return out


def evaluate(
    eval_step: Callable[..., Any],
    state: step_lib.TrainState,
    batches: Iterable[Mapping[str, np.ndarray]],
    tasks: Sequence[Task],
    batch_size: int,
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Per-task metrics and mean losses over ``batches`` (short batches are padded)."""
    total, losses, count = None, [], 0
    for batch in batches:
        n = next(iter(batch.values())).shape[0]
        stats, batch_losses = eval_step(state, _pad(batch, batch_size))
        total = stats if total is None else jax.tree.map(lambda a, b: a + b, total, stats)
        losses.append(np.asarray(batch_losses) * n)
        count += n
    if total is None:
        raise ValueError("the evaluation set is empty.")
    results = metrics_lib.finalize(tasks, jax.device_get(total))
    mean_losses = np.sum(losses, axis=0) / count
    return results, {t.name: float(v) for t, v in zip(tasks, mean_losses)}


def _crossed(before: int, after: int, every: int) -> bool:
    return every > 0 and after // every > before // every


def _flat_metrics(prefix: str, results: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    return {f"{prefix}/{task}/{name}": v for task, ms in results.items() for name, v in ms.items()}


def train(
    config: config_lib.TrainConfig,
    *,
    dataset: datasets_lib.Dataset | None = None,
) -> RunResult:
    """Trains ``config``'s model on its dataset with its method and optimizer; evaluates at the end.

    Args:
      config: the run (see :class:`~mtlx.training.config.TrainConfig`).
      dataset: use this dataset instead of loading ``config.dataset`` (tests, custom data).

    Returns:
      A :class:`RunResult`.

    Raises:
      NonFiniteLossError: a task loss became NaN or infinite (the message names the task).
      ValueError: an unknown dataset, model, method or optimizer, or inconsistent settings.
    """
    from tqdm.auto import tqdm

    start_time = time.perf_counter()
    config = config.validate()
    ds = (
        dataset
        if dataset is not None
        else datasets_lib.load(config.dataset, **config.dataset_kwargs)
    )
    tasks = ds.tasks
    input_shape = np.shape(_first_example(ds.train)[ds.input_key])
    model = config_lib.make_model(
        config.model, len(tasks), config.seed, input_shape, **config.model_kwargs
    )
    model.train()
    tx = config_lib.make_tx(config, len(tasks))
    mesh = None
    if config.num_devices is not None:
        mesh = sharding_lib.make_mesh(config.num_devices, task=config.task_devices)
    train_step = step_lib.make_train_step(
        model,
        tasks,
        tx,
        input_key=ds.input_key,
        steps_per_call=config.steps_per_call,
        chunk_size=config.chunk_size,
        mesh=mesh,
        shard_tasks=config.task_devices > 1,
    )
    eval_step = step_lib.make_eval_step(model, tasks, input_key=ds.input_key)
    batcher = data.batches(ds.train, config.batch_size, seed=config.seed)
    eval_batch_size = min(config.eval_batch_size, _source_size(ds.test))

    def eval_batches():
        return data.batches(
            ds.test, eval_batch_size, shuffle=False, num_epochs=1, drop_remainder=False
        )

    state = train_step.init()
    checkpointer = None
    if config.workdir is not None and config.checkpoint_every:
        checkpointer = checkpoint_lib.Checkpointer(os.path.join(config.workdir, "checkpoints"))
        if config.resume and checkpointer.latest_step() is not None:
            state, position, _ = checkpointer.restore(like=state)
            batcher.set_state(position)
    log_path = None if config.workdir is None else os.path.join(config.workdir, "log.jsonl")
    logger = JsonLinesLogger(log_path)
    meta = {"method": config.method, "dataset": config.dataset, "model": config.model}

    step = int(jax.device_get(state.step))
    window: list[np.ndarray] = []
    bar = tqdm(
        total=config.num_steps,
        initial=step,
        disable=not config.progress,
        desc=config.method,
        unit="step",
        leave=False,
    )
    try:
        while step < config.num_steps:
            k = config.steps_per_call
            batches = _stack([next(batcher) for _ in range(k)])
            if mesh is not None:
                batches = sharding_lib.shard_batch(batches, mesh, batch_axis=1)
            state, losses = train_step.step(state, batches)
            losses = np.asarray(jax.device_get(losses))
            check_finite_losses(losses, tasks, step + 1)
            before, step = step, step + k
            window.append(losses)
            bar.update(k)
            bar.set_postfix({t.name: f"{v:.3f}" for t, v in zip(tasks, losses[-1])}, refresh=False)
            if _crossed(before, step, config.log_every) or step == config.num_steps:
                mean = np.concatenate(window).mean(axis=0)
                window = []
                logger.write(
                    {
                        **meta,
                        "step": step,
                        "epoch": batcher.step // batcher.steps_per_epoch,
                        "time": time.perf_counter() - start_time,
                        **{f"train/loss/{t.name}": v for t, v in zip(tasks, mean)},
                    }
                )
            if _crossed(before, step, config.eval_every) and step < config.num_steps:
                results, eval_losses = evaluate(
                    eval_step, state, eval_batches(), tasks, eval_batch_size
                )
                logger.write(
                    {
                        **meta,
                        "step": step,
                        **_flat_metrics("eval", results),
                        **{f"eval/loss/{n}": v for n, v in eval_losses.items()},
                    }
                )
            if checkpointer is not None and (
                _crossed(before, step, config.checkpoint_every) or step == config.num_steps
            ):
                checkpointer.save(
                    state, batcher.get_state(), metadata={**meta, "config": _jsonable(config)}
                )
        bar.close()
        results, eval_losses = evaluate(eval_step, state, eval_batches(), tasks, eval_batch_size)
        dm = metrics_lib.delta_m(results, config.baselines) if config.baselines else None
        record = {
            **meta,
            "step": step,
            **_flat_metrics("eval", results),
            **{f"eval/loss/{n}": v for n, v in eval_losses.items()},
        }
        if dm is not None:
            record["eval/delta_m"] = dm
        record["time"] = time.perf_counter() - start_time
        logger.write(record)
    finally:
        bar.close()
        logger.close()
        if checkpointer is not None:
            checkpointer.close()
    return RunResult(
        config,
        tasks,
        state,
        results,
        eval_losses,
        dm,
        logger.records,
        time.perf_counter() - start_time,
    )


def _source_size(source: Any) -> int:
    """Examples in a source (a dict of arrays or a sequence of example dicts)."""
    if isinstance(source, Mapping):
        return len(next(iter(source.values())))
    return len(source)


def _first_example(source: Any) -> Mapping[str, Any]:
    if isinstance(source, Mapping):
        return {k: v[0] for k, v in source.items()}
    return source[0]


def _stack(batches: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.stack([b[k] for b in batches]) for k in batches[0]}


def _jsonable(config: config_lib.TrainConfig) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))
