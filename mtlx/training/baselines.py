"""Single-task baselines for Δm: each task trained alone with the run's model and budget.

:func:`single_task_baselines` trains, for every task t, the configured model with
``mtlx.scalarization`` and the one-hot weight ``e_t`` (every other task's loss has weight 0, so
the shared trunk sees task t only), the same optimizer, steps, batch size and seed as the
multi-task run, and keeps task t's test metrics. Δm (:func:`mtlx.training.delta_m`) compares a
multi-task run against them. :func:`save_baselines` / :func:`load_baselines` keep them in a small
JSON file, so that several runs (or CLI calls, ``--baselines FILE``) share one computation.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

from mtlx.training import config as config_lib
from mtlx.training import datasets as datasets_lib
from mtlx.training import loop, study
from mtlx.training.metrics import DELTA_M_CONVENTION
from mtlx.training.tasks import check_tasks

Baselines = dict[str, dict[str, float]]

__all__ = ["load_baselines", "save_baselines", "single_task_baselines"]


def single_task_baselines(
    config: config_lib.TrainConfig,
    *,
    dataset: datasets_lib.Dataset | None = None,
    workdir: str | None = None,
    on_result: Callable[[str, loop.RunResult], None] | None = None,
) -> Baselines:
    """Trains each task of ``config``'s dataset alone; returns ``{task: {metric: value}}``.

    Args:
      config: the multi-task run; its method (and baselines) are replaced by
        ``scalarization(one-hot)``, everything else is kept.
      dataset: the dataset (default: ``config.dataset`` loaded once for all tasks).
      workdir: where each task's run logs (``workdir/<task>``; default: nowhere).
      on_result: called with ``(task name, RunResult)`` after each run (progress reports).

    Returns:
      Every task's test metrics from its own single-task run.
    """
    ds = (
        dataset
        if dataset is not None
        else datasets_lib.load(config.dataset, **config.dataset_kwargs)
    )
    tasks = check_tasks(ds.tasks)
    out: Baselines = {}
    for t, task in enumerate(tasks):
        run_config = study.single_task_config(config, t, len(tasks)).replace(
            baselines=None,
            workdir=None if workdir is None else os.path.join(workdir, task.name),
        )
        result = loop.train(run_config, dataset=ds)
        out[task.name] = dict(result.results[task.name])
        if on_result is not None:
            on_result(task.name, result)
    return out


def save_baselines(
    path: str | os.PathLike,
    baselines: Mapping[str, Mapping[str, float]],
    *,
    config: config_lib.TrainConfig | None = None,
) -> None:
    """Writes ``baselines`` as JSON (with the Δm convention and, if given, the run's config)."""
    record: dict[str, Any] = {
        "baselines": {t: {m: float(v) for m, v in ms.items()} for t, ms in baselines.items()},
        "delta_m": DELTA_M_CONVENTION,
        "how": "each task trained alone: mtlx.scalarization with a one-hot weight, same config",
    }
    if config is not None:
        record["config"] = json.loads(
            json.dumps(dataclasses.asdict(config.replace(baselines=None)), default=str)
        )
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1, ensure_ascii=False)
        f.write("\n")


def load_baselines(path: str | os.PathLike) -> Baselines:
    """Reads baselines written by :func:`save_baselines` (or a plain ``{task: {metric: value}}``).

    Raises:
      ValueError: the file is missing or is not ``{task: {metric: number}}``.
    """
    if not os.path.isfile(path):
        raise ValueError(
            f"no baselines file {str(path)!r}; write one with python -m mtlx.train "
            "--save-baselines FILE (it trains each task alone)."
        )
    with open(path, encoding="utf-8") as f:
        try:
            record = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e}).") from e
    baselines = record.get("baselines", record) if isinstance(record, dict) else None
    ok = isinstance(baselines, dict) and all(
        isinstance(ms, dict) and all(isinstance(v, (int, float)) for v in ms.values())
        for ms in baselines.values()
    )
    if not ok or not baselines:
        raise ValueError(
            f"{path}: expected {{task: {{metric: number}}}} (or {{'baselines': ...}}); got "
            f"{str(record)[:200]}."
        )
    return {t: {m: float(v) for m, v in ms.items()} for t, ms in baselines.items()}
