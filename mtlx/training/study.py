"""Multi-seed studies: a list of runs x seeds through :func:`mtlx.training.train`, summarised honestly.

A study trains every labelled :class:`~mtlx.training.config.TrainConfig` with every seed, plus the
single-task runs that Δm is measured against, writes one JSON file per run (so an interrupted
study resumes where it stopped), and reports for each label the mean ± std of every task metric
and of Δm, and the paired difference to a named baseline label with a 95 % confidence interval
(paired over seeds: run ``(label, seed)`` against ``(baseline, seed)``, Student's t).

**The Δm convention** (stated in every table this module writes): for one run,

.. math::
  \\Delta m = \\frac{100}{K} \\sum_{k=1}^K (-1)^{l_k} \\frac{M_k - B_k}{|B_k|}

over the K (task, metric) pairs (flat over metrics; with one metric per task this is the same as
per-task-then-mean), :math:`l_k = 1` when lower is better, so **positive is better**. The base
:math:`B` is the mean over the study's seeds of single-task runs: the same model, data, optimizer
and number of steps, trained by :func:`mtlx.scalarization` with a one-hot weight (the other heads
get no gradient and the shared encoder learns that task alone).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from mtlx.training import config as config_lib
from mtlx.training import metrics as metrics_lib

DELTA_M_CONVENTION = (
    "Δm (%) = mean over (task, metric) of the signed relative change against the single-task "
    "base, positive = better; base = mean over seeds of single-task runs of the same model, data, "
    "optimizer and steps (scalarization with a one-hot weight)."
)
SINGLE_TASK_PREFIX = "stl/"


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """One finished run of a study: what :func:`run_study` writes to ``runs/<label>/seed<k>.json``."""

    label: str
    seed: int
    results: dict[str, dict[str, float]]  # {task: {metric: value}} on the test split
    seconds: float  # wall time of the run, compilation included
    delta_m: float | None = None  # filled in against the study's single-task base

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Study:
    """The runs of a study and their summaries (see the module docstring)."""

    records: list[RunRecord]
    labels: list[str]  # the multi-task labels, in the order they were given
    seeds: list[int]
    base: dict[str, dict[str, float]] | None  # mean single-task results, or None
    tasks: tuple[Any, ...]  # the tasks (their kinds give each metric's direction)

    def runs(self, label: str) -> list[RunRecord]:
        """The records of ``label``, in seed order."""
        by_seed = {r.seed: r for r in self.records if r.label == label}
        return [by_seed[s] for s in self.seeds if s in by_seed]

    def metric_names(self) -> list[tuple[str, str]]:
        """``(task, metric)`` pairs of the runs, in task order."""
        first = self.runs(self.labels[0])[0].results
        return [(t, m) for t, ms in first.items() for m in ms]

    def summary(self, label: str) -> dict[str, tuple[float, float]]:
        """``{"task/metric": (mean, std)}`` over seeds, plus ``"delta_m"`` and ``"mean_metric"``.

        ``std`` is the sample standard deviation (ddof=1; 0 for one seed). ``"mean_metric"`` is the
        mean over tasks of the first metric of each task (e.g. the mean accuracy).
        """
        runs = self.runs(label)
        out = {}
        for task, metric in self.metric_names():
            out[f"{task}/{metric}"] = mean_std([r.results[task][metric] for r in runs])
        firsts = [
            float(np.mean([next(iter(ms.values())) for ms in r.results.values()])) for r in runs
        ]
        out["mean_metric"] = mean_std(firsts)
        if all(r.delta_m is not None for r in runs):
            out["delta_m"] = mean_std([r.delta_m for r in runs])
        return out

    def paired_delta_m(self, label: str, baseline: str) -> PairedDifference:
        """Δm(label) − Δm(baseline), paired over the seeds both have."""
        a = {r.seed: r.delta_m for r in self.runs(label)}
        b = {r.seed: r.delta_m for r in self.runs(baseline)}
        seeds = [s for s in self.seeds if s in a and s in b]
        return paired_difference([a[s] for s in seeds], [b[s] for s in seeds])

    def to_json(self) -> dict[str, Any]:
        return {
            "convention": DELTA_M_CONVENTION,
            "seeds": self.seeds,
            "labels": self.labels,
            "single_task_base": self.base,
            "summary": {label: self.summary(label) for label in self.labels},
            "runs": [r.to_json() for r in self.records],
        }

    def markdown(
        self,
        baseline: str | None = None,
        *,
        per_task: bool = True,
        labels: Sequence[str] | None = None,
        paired_with: Mapping[str, str] | None = None,
    ) -> str:
        """A table: per label the metrics' mean ± std, Δm, and Δm − Δm(baseline) with its 95 % CI.

        Args:
          baseline: the label every other is paired with (``None``: no paired column).
          per_task: one column per (task, metric); else only the mean metric and Δm.
          labels: the rows (default: every multi-task label).
          paired_with: per-row baselines ``{label: other}`` that replace ``baseline`` for those
            rows (RW + MGDA against MGDA); the column then reads "paired Δm difference".
        """
        names = self.metric_names() if per_task else []
        rows = self.labels if labels is None else list(labels)
        paired_with = dict(paired_with or {})
        header = ["method", *[f"{t} {m}" for t, m in names], "mean metric", "Δm (%)"]
        if paired_with:
            header += ["paired with", "Δm difference [95 % CI]"]
        elif baseline is not None:
            header.append(f"Δm − Δm({baseline}) [95 % CI]")
        lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        for label in rows:
            s = self.summary(label)
            cells = [label]
            cells += [_pm(*s[f"{t}/{m}"], digits=4) for t, m in names]
            cells.append(_pm(*s["mean_metric"], digits=4))
            cells.append(_pm(*s["delta_m"], digits=2) if "delta_m" in s else "–")
            other = paired_with.get(label, baseline)
            if paired_with:
                cells.append(other or "–")
            if paired_with or baseline is not None:
                cells.append(
                    "–"
                    if other is None or label == other
                    else str(self.paired_delta_m(label, other))
                )
            lines.append("| " + " | ".join(cells) + " |")
        base = "" if self.base is None else f" {DELTA_M_CONVENTION}"
        lines.append("")
        lines.append(
            f"{len(self.seeds)} seeds ({', '.join(map(str, self.seeds))}); mean ± std; * marks a "
            f"paired 95 % interval that excludes 0.{base}"
        )
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """Mean of paired differences ``a_i − b_i`` with a two-sided 95 % Student-t interval."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def significant(self) -> bool:
        """The interval excludes 0 (beyond seed noise at the 5 % level)."""
        return self.n > 1 and (self.low > 0 or self.high < 0)

    def __str__(self) -> str:
        if self.n < 2:
            return f"{self.mean:+.2f} (n = {self.n})"
        mark = " *" if self.significant else ""
        return f"{self.mean:+.2f} [{self.low:+.2f}, {self.high:+.2f}]{mark}"


def _pm(mean: float, std: float, *, digits: int) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    x = np.asarray(values, np.float64)
    if x.size == 0:
        raise ValueError("mean_std needs at least one value.")
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else 0.0


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (scipy when installed)."""
    try:
        from scipy import stats
    except ImportError:  # pragma: no cover - scipy comes with scikit-learn in the train extra
        return _t_quantile_975(df) if math.isclose(p, 0.975) else float("nan")
    return float(stats.t.ppf(p, df))


def _t_quantile_975(df: int) -> float:
    table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
             9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}  # fmt: skip
    return table.get(df, table[max(k for k in table if k <= df)])


def paired_difference(a: Sequence[float], b: Sequence[float]) -> PairedDifference:
    """``mean(a − b)`` with the 95 % t-interval of the paired differences."""
    if len(a) != len(b):
        raise ValueError(f"paired samples need equal lengths; got {len(a)} and {len(b)}.")
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    n = d.size
    if n == 0:
        raise ValueError("no paired values.")
    mean = float(d.mean())
    if n < 2:
        return PairedDifference(mean, float("nan"), float("nan"), n)
    half = t_quantile(0.975, n - 1) * float(d.std(ddof=1)) / math.sqrt(n)
    return PairedDifference(mean, mean - half, mean + half, n)


def single_task_config(config: config_lib.TrainConfig, task_index: int, num_tasks: int):
    """``config`` trained on task ``task_index`` alone: scalarization with a one-hot weight."""
    weights = [0.0] * num_tasks
    weights[task_index] = 1.0
    return config.replace(method="scalarization", method_kwargs={"weights": weights})


def enable_compilation_cache(directory: str | os.PathLike) -> None:
    """Turns on JAX's persistent compilation cache in ``directory`` for every program (process-wide)."""
    import jax

    jax.config.update("jax_compilation_cache_dir", os.fspath(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def grid_label(label: str, learning_rate: float) -> str:
    """The label of one point of a learning-rate grid: ``"adam/ew@lr=0.001"``."""
    return f"{label}@lr={learning_rate:g}"


def _save_record(path: str | None, record: RunRecord) -> None:
    """Writes ``record`` to ``path`` (``None``: nothing), the file a resumed study reads back."""
    if path is None:
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(record.to_json(), f, indent=1)


def _record_path(out_dir: str, label: str, seed: int) -> str:
    return os.path.join(out_dir, "runs", label.replace("/", "__"), f"seed{seed}.json")


def run_study(
    runs: Sequence[tuple[str, config_lib.TrainConfig]],
    seeds: Sequence[int],
    *,
    out_dir: str | os.PathLike | None = None,
    single_task: bool = True,
    dataset: Any = None,
    train_fn: Callable[..., Any] | None = None,
    sweep_fn: Callable[..., Any] | None = None,
    log: Callable[[str], None] | None = print,
    compilation_cache: str | os.PathLike | None = None,
    learning_rates: Sequence[float] | Mapping[str, Sequence[float]] | None = None,
) -> Study:
    """Trains every ``(label, config)`` of ``runs`` with every seed (and the single-task base).

    Args:
      runs: ``(label, config)`` pairs; labels are unique (``"ew"``, ``"rw+mgda"``). The configs'
        ``seed`` is replaced by each study seed.
      seeds: the seeds; the same seeds for every label, so differences pair up.
      out_dir: where ``runs/<label>/seed<k>.json`` go; an existing file is read instead of
        training again (resume). ``None``: nothing is written.
      single_task: also train each task alone (the Δm base) with the first config's model, data
        and budget; without it, no Δm.
      dataset: a :class:`~mtlx.training.Dataset` to use instead of each config's named dataset.
      train_fn: the training function (``mtlx.training.train`` by default); tests pass a fake.
      sweep_fn: trains the T single-task models of one seed at once
        (:func:`mtlx.training.train_sweep` over one-hot weights) when ``train_fn`` is the
        default; ``None`` with a custom ``train_fn``: one run per task.
      log: progress messages (``None``: silent).
      compilation_cache: a directory for JAX's persistent compilation cache. The runs of one
        label differ only in their seed, so their steps compile to the same program: with the
        cache, every seed after the first skips compilation (several seconds a run on CPU). It
        sets the process-wide ``jax_compilation_cache_dir``.
      learning_rates: a learning-rate grid, one for all labels or ``{label: rates}`` (e.g. each
        optimizer its own range): every ``(label, config)`` becomes the labels
        ``f"{label}@lr={rate:g}"``, one per rate, trained per seed as ONE
        :func:`mtlx.training.train_sweep` over the rates (one compilation for the grid). The
        single-task base keeps the first config's own ``learning_rate``.

    Returns:
      The :class:`Study`.
    """
    if compilation_cache is not None:
        enable_compilation_cache(compilation_cache)
    if train_fn is None:
        from mtlx.training.loop import train as train_fn
        from mtlx.training.sweep import train_sweep

        sweep_fn = train_sweep if sweep_fn is None else sweep_fn
    labels = [label for label, _ in runs]
    rates_of: dict[str, list[float]] = {}
    if learning_rates is not None:
        for label in labels:
            rates = (
                learning_rates.get(label) if isinstance(learning_rates, Mapping) else learning_rates
            )
            if rates is None or len(rates) == 0:
                raise ValueError(
                    f"learning_rates must name at least one rate for {label!r} (or be None)."
                )
            rates_of[label] = [float(r) for r in rates]
        labels = [grid_label(label, rate) for label in labels for rate in rates_of[label]]
    if len(set(labels)) != len(labels):
        raise ValueError(f"study labels must be unique; got {labels}.")
    if not runs or not seeds:
        raise ValueError("a study needs at least one run and one seed.")
    if any(label.startswith(SINGLE_TASK_PREFIX) for label in labels):
        raise ValueError(f"labels starting with {SINGLE_TASK_PREFIX!r} are the single-task runs.")
    out = None if out_dir is None else os.fspath(out_dir)
    tasks: tuple[Any, ...] = ()

    def run_one(label: str, config: config_lib.TrainConfig, seed: int) -> RunRecord:
        nonlocal tasks
        path = None if out is None else _record_path(out, label, seed)
        if path is not None and os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            return RunRecord(data["label"], data["seed"], data["results"], data["seconds"])
        start = time.perf_counter()
        result = train_fn(
            config.replace(seed=seed, progress=False, workdir=None, baselines=None),
            dataset=dataset,
        )
        tasks = tuple(result.tasks)
        record = RunRecord(label, seed, result.results, time.perf_counter() - start)
        _save_record(path, record)
        if log is not None:
            log(f"{label} seed {seed}: {record.seconds:.1f} s")
        return record

    def run_grid(label: str, config: config_lib.TrainConfig, seed: int) -> list[RunRecord]:
        """The learning-rate grid of one label and seed: one sweep, or cached records."""
        nonlocal tasks
        rates = rates_of[label]
        grid = [grid_label(label, rate) for rate in rates]
        paths = [None if out is None else _record_path(out, g, seed) for g in grid]
        if sweep_fn is None or all(p is not None and os.path.exists(p) for p in paths):
            return [
                run_one(g, config.replace(learning_rate=rate), seed) for g, rate in zip(grid, rates)
            ]
        sweep = sweep_fn(
            config.replace(seed=seed, progress=False, workdir=None, baselines=None),
            learning_rate=np.asarray(rates, np.float32),
            dataset=dataset,
        )
        tasks = tuple(sweep.tasks)
        records = []
        for g, path, results in zip(grid, paths, sweep.results):
            record = RunRecord(g, seed, results, sweep.seconds / len(grid))
            _save_record(path, record)
            records.append(record)
        if log is not None:
            log(f"{label} seed {seed}: {sweep.seconds:.1f} s for {len(grid)} learning rates")
        return records

    records: list[RunRecord] = []
    base = None
    for seed in seeds:
        for label, config in runs:
            if learning_rates is None:
                records.append(run_one(label, config, seed))
            else:
                records.extend(run_grid(label, config, seed))
    task_names = list(records[0].results)
    if single_task:
        first = runs[0][1]
        stl: dict[str, list[dict[str, float]]] = {t: [] for t in task_names}
        for seed in seeds:
            stl_records = _single_task_records(first, task_names, seed, out, run_one, sweep_fn, log)
            for task, record in zip(task_names, stl_records):
                records.append(record)
                stl[task].append(record.results[task])
        base = {
            task: {m: float(np.mean([r[m] for r in rs])) for m in rs[0]} for task, rs in stl.items()
        }
        records = [
            dataclasses.replace(r, delta_m=metrics_lib.delta_m(r.results, base, tasks or None))
            if not r.label.startswith(SINGLE_TASK_PREFIX)
            else r
            for r in records
        ]
    study = Study(records, labels, list(seeds), base, tasks)
    if out is not None:
        with open(os.path.join(out, "study.json"), "w", encoding="utf-8") as f:
            json.dump(study.to_json(), f, indent=1)
    return study


def _single_task_records(first, task_names, seed, out, run_one, sweep_fn, log) -> list[RunRecord]:
    """The single-task runs of one seed: one sweep over one-hot weights, or one run per task."""
    labels = [f"{SINGLE_TASK_PREFIX}{t}" for t in task_names]
    paths = [None if out is None else _record_path(out, label, seed) for label in labels]
    cached = all(p is not None and os.path.exists(p) for p in paths)
    if sweep_fn is None or cached:
        return [
            run_one(label, single_task_config(first, i, len(task_names)), seed)
            for i, label in enumerate(labels)
        ]
    num_tasks = len(task_names)
    config = single_task_config(first, 0, num_tasks).replace(
        seed=seed, progress=False, workdir=None, baselines=None
    )
    sweep = sweep_fn(config, {"weights": np.eye(num_tasks)})
    seconds = sweep.seconds / num_tasks
    records = []
    for label, path, results in zip(labels, paths, sweep.results):
        record = RunRecord(label, seed, results, seconds)
        _save_record(path, record)
        records.append(record)
    if log is not None:
        log(f"single-task runs, seed {seed}: {sweep.seconds:.1f} s for {num_tasks} models at once")
    return records


def summary_rows(study: Study, baseline: str) -> list[Mapping[str, Any]]:
    """One dict per label: Δm mean/std and the paired difference to ``baseline`` (for JSON/plots)."""
    rows = []
    for label in study.labels:
        s = study.summary(label)
        row: dict[str, Any] = {"label": label}
        if "delta_m" in s:
            row["delta_m_mean"], row["delta_m_std"] = s["delta_m"]
            if label != baseline:
                d = study.paired_delta_m(label, baseline)
                row.update(
                    diff_mean=d.mean, diff_low=d.low, diff_high=d.high, significant=d.significant
                )
        rows.append(row)
    return rows
