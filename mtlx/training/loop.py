"""The training loop: batches in, jitted steps, finite-loss checks, logs, evaluation, checkpoints.

:func:`train` runs one :class:`~mtlx.training.config.TrainConfig` end to end and returns the final
per-task metrics (and Δm when the config has single-task baselines), the final state and the
model's graph. A caller may hand it its own model, optax chain, ``shared`` predicate and an
``observe`` function (per-step observations, see :func:`~mtlx.training.step.make_train_step`),
so studies run through the same step as the benchmarks. Every jitted call runs
``steps_per_call`` optimizer steps; its ``(steps_per_call, T)`` task losses come back to the host,
where they are checked (a NaN or infinite loss stops the run with an error that names the task),
averaged for the progress bar and written as JSON lines (``workdir/log.jsonl``).

Resuming is bit-exact: a checkpoint holds the whole :class:`~mtlx.training.step.TrainState` and
the data position (:func:`mtlx.data.batches` makes batch ``i`` a pure function of the seed and
``i``).

Multi-process (after :func:`mtlx.training.distributed.initialize`): the mesh spans every process's
devices; every process draws the same order of example indices and loads only its rows of each
global batch, so the global batches are those of a single-process run. Evaluation batches are
split the same way and their metric sums reduced over the mesh; process 0 alone writes the log,
the curves and prints; all processes save and restore each checkpoint together (orbax).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

import mtlx
from mtlx import data
from mtlx.training import checkpoint as checkpoint_lib
from mtlx.training import config as config_lib
from mtlx.training import curves as curves_lib
from mtlx.training import datasets as datasets_lib
from mtlx.training import distributed
from mtlx.training import metrics as metrics_lib
from mtlx.training import sharding as sharding_lib
from mtlx.training import step as step_lib
from mtlx.training.tasks import Task, check_tasks

PyTree = Any


class NonFiniteLossError(ValueError):
    """A task loss became NaN or infinite during training."""


class RunResult(NamedTuple):
    """What :func:`train` returns.

    Attributes:
      config: the run's configuration.
      tasks: its tasks.
      state: the final :class:`~mtlx.training.step.TrainState` (step, params, model state,
        optimizer state).
      results: the final evaluation, ``{task: {metric: value}}``.
      eval_losses: the final evaluation loss per task.
      delta_m: Δm (%) against ``config.baselines`` (``None`` without baselines).
      history: every logged record.
      seconds: wall time of the run (compilation included).
      graphdef: the model's static graph: :meth:`model` rebuilds the trained model.
      observations: the ``observe`` function's outputs of every step this call ran, each leaf
        ``(steps, ...)`` (concatenated over the jitted calls); ``None`` without ``observe``.
    """

    config: config_lib.TrainConfig
    tasks: tuple[Task, ...]
    state: step_lib.TrainState
    results: dict[str, dict[str, float]]
    eval_losses: dict[str, float]
    delta_m: float | None
    history: list[dict[str, Any]]
    seconds: float
    graphdef: Any = None
    observations: PyTree = None

    def model(self) -> Any:
        """The trained model: ``nnx.merge(graphdef, state.params, state.model_state)``."""
        from flax import nnx

        return nnx.merge(self.graphdef, self.state.params, self.state.model_state)


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


def pad_batch(batch: Mapping[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Pads a short batch to ``size``: integer targets with -1 and float arrays with 0.

    The evaluation step also gets a mask of the real examples, so metrics and losses ignore the
    padding whatever its values, and the last batch needs no second compilation.
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
    """Per-task metrics and mean losses over ``batches`` (short batches are padded and masked)."""
    total, mean_losses = accumulate_evaluation(eval_step, state, batches, batch_size)
    results = metrics_lib.finalize(tasks, total)
    return results, {t.name: float(v) for t, v in zip(tasks, mean_losses)}


def accumulate_evaluation(
    eval_step: Callable[..., Any],
    state: Any,
    batches: Iterable[Mapping[str, np.ndarray]],
    batch_size: int,
) -> tuple[PyTree, np.ndarray]:
    """The summed metric statistics over ``batches`` (on the host) and the mean ``(..., T)`` losses.

    ``eval_step`` may be vmapped over stacked states (:func:`mtlx.training.train_sweep`): the
    statistics and losses then carry the leading model axis.
    """
    total, loss_sum, count = None, None, 0
    for batch in batches:
        n = next(iter(batch.values())).shape[0]
        mask = np.arange(batch_size) < n
        stats, batch_losses = eval_step(state, pad_batch(batch, batch_size), mask)
        total = stats if total is None else jax.tree.map(lambda a, b: a + b, total, stats)
        batch_losses = np.asarray(batch_losses) * n
        loss_sum = batch_losses if loss_sum is None else loss_sum + batch_losses
        count += n
    if total is None:
        raise ValueError("the evaluation set is empty.")
    return jax.device_get(total), loss_sum / count


def evaluate_across_processes(
    eval_step: Callable[..., Any],
    state: step_lib.TrainState,
    source: Any,
    tasks: Sequence[Task],
    batch_size: int,
    mesh: jax.sharding.Mesh,
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """:func:`evaluate` over ``source`` with each batch split over the mesh's data axis.

    Every process loads only its rows of each (padded) batch of ``batch_size`` examples, a
    multiple of the data devices; the metric statistics and losses are reduced over the whole
    mesh, so every process gets the same results.
    """
    lo, hi = sharding_lib.process_batch_rows(mesh, batch_size)
    index = data.batches(
        {"index": np.arange(source_size(source))},
        batch_size,
        shuffle=False,
        num_epochs=1,
        drop_remainder=False,
    )
    total, loss_sum, count = None, None, 0
    for ids in index:
        ids = ids["index"]
        n = len(ids)
        mine = ids[lo : min(hi, n)]
        local = distributed.gather(source, mine if len(mine) else ids[:1])
        local = pad_batch({k: v[: len(mine)] for k, v in local.items()}, hi - lo)
        local["_mask"] = (np.arange(batch_size) < n)[lo:hi]
        batch = sharding_lib.shard_process_batch(local, mesh, batch_size)
        mask = batch.pop("_mask")
        stats, batch_losses = distributed.fetch(eval_step(state, batch, mask))
        total = stats if total is None else jax.tree.map(lambda a, b: a + b, total, stats)
        batch_losses = np.asarray(batch_losses) * n
        loss_sum = batch_losses if loss_sum is None else loss_sum + batch_losses
        count += n
    if total is None:
        raise ValueError("the evaluation set is empty.")
    results = metrics_lib.finalize(tasks, total)
    return results, {t.name: float(v) for t, v in zip(tasks, loss_sum / count)}


def _crossed(before: int, after: int, every: int) -> bool:
    return every > 0 and after // every > before // every


def _flat_metrics(prefix: str, results: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    return {f"{prefix}/{task}/{name}": v for task, ms in results.items() for name, v in ms.items()}


def train(
    config: config_lib.TrainConfig,
    *,
    dataset: datasets_lib.Dataset | None = None,
    model: Any = None,
    tx: Any = None,
    shared: Any = None,
    observe: Callable[[step_lib.StepContext], PyTree] | None = None,
) -> RunResult:
    """Trains ``config``'s model on its dataset with its method and optimizer; evaluates at the end.

    Args:
      config: the run (see :class:`~mtlx.training.config.TrainConfig`).
      dataset: use this dataset instead of loading ``config.dataset`` (tests, custom data).
      model: a caller-built multi-task ``nnx.Module`` (one output per task) to train instead of
        ``config.model``; its current variables are the initial state. It is switched to
        ``model.train()``. See :class:`~mtlx.training.FunctionalModel` for a pure function.
      tx: a caller-built optax chain instead of ``optax.chain(config.method, config.optimizer)``,
        e.g. ``optax.chain(mtlx.conflict_monitor(), mtlx.ew(), optax.adam(1e-3))``.
      shared: which parameters are shared (predicate or bool pytree, see
        :func:`~mtlx.training.make_train_step`); default: all but ``heads``.
      observe: ``observe(ctx) -> pytree`` called inside every jitted step with a
        :class:`~mtlx.training.StepContext`; the outputs come back in
        :attr:`RunResult.observations`, stacked over steps (one transfer per jitted call).

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
    tasks = check_tasks(ds.tasks)
    if model is None:
        model = model_for(config, ds)
    elif not _is_module(model):
        raise ValueError(
            f"model must be a flax nnx.Module returning one output per task; got "
            f"{type(model).__name__} (wrap a pure apply(params, x) in "
            "mtlx.training.FunctionalModel)."
        )
    model.train()
    if tx is None:
        tx = config_lib.make_tx(config, len(tasks))
    elif config.skip_nonfinite:
        tx = mtlx.skip_nonfinite(tx)  # a caller's chain gets the guard the config asks for
    multi = distributed.is_multiprocess()
    writer = distributed.is_writer()
    fetch = distributed.fetch if multi else jax.device_get
    mesh = None
    if config.num_devices is not None or multi:
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
        shared=shared,
        observe=observe,
        scan=config.scan,
    )
    eval_step = step_lib.make_eval_step(model, tasks, input_key=ds.input_key)
    eval_batch_size = min(config.eval_batch_size, source_size(ds.test))
    if multi:
        # The same index order on every process (a pure function of the seed); each process
        # loads its own rows of each batch.
        batcher = data.batches(
            {"index": np.arange(source_size(ds.train))}, config.batch_size, seed=config.seed
        )
        rows = sharding_lib.process_batch_rows(mesh, config.batch_size, batch_axis=1)
        data_devices = mesh.shape[sharding_lib.DATA_AXIS]
        eval_batch_size = -(-eval_batch_size // data_devices) * data_devices

        def run_eval():
            return evaluate_across_processes(
                eval_step, state, ds.test, tasks, eval_batch_size, mesh
            )
    else:
        batcher = data.batches(ds.train, config.batch_size, seed=config.seed)

        def run_eval():
            return evaluate(eval_step, state, eval_batches(), tasks, eval_batch_size)

    def eval_batches():
        return data.batches(
            ds.test, eval_batch_size, shuffle=False, num_epochs=1, drop_remainder=False
        )

    state = train_step.init()
    checkpointer = None
    if config.workdir is not None and config.checkpoint_every:
        directory = os.path.join(config.workdir, "checkpoints")
        if not config.resume and writer:
            _set_aside(directory)
        distributed.sync("mtlx.train.checkpoints_set_aside")
        checkpointer = checkpoint_lib.Checkpointer(directory)
        if config.resume and checkpointer.latest_step() is not None:
            restored = checkpointer.restore_newest_readable(
                state,
                check=lambda md: check_resumable(config, md.get("config"), checkpointer.directory),
                log=lambda line: writer and print(line, file=sys.stderr, flush=True),
            )
            state, position, _ = restored
            batcher.set_state(position)
            if writer:
                print(
                    f"resumed from step {int(fetch(state.step))} of {checkpointer.directory}",
                    file=sys.stderr,
                    flush=True,
                )
    log_path = None if config.workdir is None else os.path.join(config.workdir, "log.jsonl")
    logger = JsonLinesLogger(log_path if writer else None)
    meta = {"method": config.method, "dataset": config.dataset, "model": config.model}

    step = int(fetch(state.step))
    window: list[np.ndarray] = []
    observed: list[PyTree] = []
    bar = tqdm(
        total=config.num_steps,
        initial=step,
        disable=not (config.progress and writer),
        desc=config.method,
        unit="step",
        leave=False,
    )
    try:
        while step < config.num_steps:
            k = config.steps_per_call
            if multi:
                indices = [next(batcher)["index"][rows[0] : rows[1]] for _ in range(k)]
                local = stack_batches([distributed.gather(ds.train, i) for i in indices])
                batches = sharding_lib.shard_process_batch(
                    local, mesh, config.batch_size, batch_axis=1
                )
            else:
                batches = stack_batches([next(batcher) for _ in range(k)])
                if mesh is not None:
                    batches = sharding_lib.shard_batch(batches, mesh, batch_axis=1)
            if train_step.observes:
                state, losses, observations = train_step.step(state, batches)
                losses, observations = fetch((losses, observations))
                observed.append(observations)
            else:
                state, losses = train_step.step(state, batches)
                losses = fetch(losses)
            losses = np.asarray(losses)
            if not config.skip_nonfinite:
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
                results, eval_losses = run_eval()
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
        results, eval_losses = run_eval()
        dm = metrics_lib.delta_m(results, config.baselines, tasks) if config.baselines else None
        record = {
            **meta,
            "step": step,
            **_flat_metrics("eval", results),
            **{f"eval/loss/{n}": v for n, v in eval_losses.items()},
        }
        if dm is not None:
            record["eval/delta_m"] = dm
        if config.skip_nonfinite:
            skipped = int(fetch(state.opt_state.skipped))
            record["skipped_updates"] = skipped
            if skipped and writer:
                print(
                    f"{config.method}: {skipped} of {step} updates skipped (non-finite losses or "
                    "updates; skip_nonfinite=True)",
                    file=sys.stderr,
                    flush=True,
                )
        record["time"] = time.perf_counter() - start_time
        logger.write(record)
    finally:
        bar.close()
        logger.close()
        if checkpointer is not None:
            checkpointer.close()
    if log_path is not None and writer:
        # The whole log, a resumed run's earlier records included.
        curves_lib.plot_curves(
            curves_lib.read_log(log_path), os.path.join(config.workdir, "curves.png")
        )
    return RunResult(
        config,
        tasks,
        state,
        results,
        eval_losses,
        dm,
        logger.records,
        time.perf_counter() - start_time,
        graphdef=train_step.graphdef,
        observations=_concatenate(observed) if train_step.observes else None,
    )


def _is_module(model: Any) -> bool:
    from flax import nnx

    return isinstance(model, nnx.Module)


def _concatenate(chunks: Sequence[PyTree]) -> PyTree:
    """Per-call observation pytrees ``(k, ...)`` joined along the step axis."""
    if not chunks:
        return None
    return jax.tree.map(lambda *xs: np.concatenate([np.asarray(x) for x in xs]), *chunks)


def model_for(config: config_lib.TrainConfig, ds: datasets_lib.Dataset) -> Any:
    """``config.model`` built for ``ds``: its number of tasks, input shape and output sizes."""
    tasks = check_tasks(ds.tasks)
    return config_lib.make_model(
        config.model,
        len(tasks),
        config.seed,
        np.shape(first_example(ds.train)[ds.input_key]),
        output_sizes={t.name: t.output_size for t in tasks},
        **config.model_kwargs,
    )


def source_size(source: Any) -> int:
    """Examples in a source (a dict of arrays or a sequence of example dicts)."""
    if isinstance(source, Mapping):
        return len(next(iter(source.values())))
    return len(source)


def first_example(source: Any) -> Mapping[str, Any]:
    if isinstance(source, Mapping):
        return {k: v[0] for k, v in source.items()}
    return source[0]


def stack_batches(batches: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.stack([b[k] for b in batches]) for k in batches[0]}


# Settings a resumed run may change: how long, how often to log / evaluate / save, where, and
# the display. Every other field shapes the trajectory, and a change would silently continue
# the old run under the new run's name.
RESUMABLE_CHANGES = frozenset(
    {
        "num_steps", "log_every", "eval_every", "checkpoint_every", "progress", "resume",
        "workdir", "baselines", "eval_batch_size",
    }
)  # fmt: skip


def _set_aside(directory: str) -> None:
    """Moves an earlier run's checkpoints out of the way of a run that starts over (never deletes:
    ``checkpoints`` becomes ``checkpoints.replaced-N``)."""
    if not os.path.isdir(directory) or not os.listdir(directory):
        return
    n = 1
    while os.path.exists(f"{directory}.replaced-{n}"):
        n += 1
    os.rename(directory, f"{directory}.replaced-{n}")
    print(
        f"resume=False: the earlier checkpoints in {directory} were moved to "
        f"{directory}.replaced-{n}",
        file=sys.stderr,
        flush=True,
    )


def check_resumable(
    config: config_lib.TrainConfig, stored: Mapping[str, Any] | None, directory: str
) -> None:
    """Raises when the checkpoint in ``directory`` was written by a different configuration.

    ``stored`` is the configuration the checkpoint's metadata holds (``None`` for a checkpoint
    written without one, which is accepted). Fields in :data:`RESUMABLE_CHANGES` may differ.
    """
    if stored is None:
        return
    current = _jsonable(config)
    changed = sorted(
        key
        for key in set(current) | set(stored)
        if key not in RESUMABLE_CHANGES and current.get(key) != stored.get(key)
    )
    if changed:
        diffs = "; ".join(f"{k}: {stored.get(k)!r} -> {current.get(k)!r}" for k in changed)
        raise ValueError(
            f"the checkpoint in {directory} was written by another configuration ({diffs}). "
            "Resuming would continue that run under this one's settings: start over with "
            "resume=False (CLI: --no-resume), or use another workdir."
        )


def _jsonable(config: config_lib.TrainConfig) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))
