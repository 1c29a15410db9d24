"""A run's curves as a figure: the training loss of every task and the test metrics over steps."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any


def read_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a JSON-lines log (one object per line; blank lines skipped)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_curves(records: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> str:
    """Draws ``train/loss/<task>`` and ``eval/<task>/<metric>`` over ``step`` into ``path``.

    ``records`` are a run's log records (:attr:`mtlx.training.RunResult.log`, or
    :func:`read_log` of its ``log.jsonl``, which keeps a resumed run's earlier records too). A
    record may hold any subset of the keys; a key seen twice at one step keeps the last value.

    Returns:
      ``path``.

    Raises:
      ValueError: no record has a step and a training loss or a test metric.
    """
    train: dict[str, dict[int, float]] = {}
    evals: dict[str, dict[int, float]] = {}
    for record in records:
        if "step" not in record:
            continue
        step = int(record["step"])
        for key, value in record.items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            if key.startswith("train/loss/"):
                train.setdefault(key.removeprefix("train/loss/"), {})[step] = float(value)
            elif key.startswith("eval/") and not key.startswith("eval/loss/"):
                evals.setdefault(key.removeprefix("eval/"), {})[step] = float(value)
    if not train and not evals:
        raise ValueError("no record has a step with a training loss or a test metric to plot.")
    import matplotlib  # a dependency of the trainer's extra ("mtlx[train]")

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, series in train.items():
        steps = sorted(series)
        axes[0].plot(steps, [series[s] for s in steps], label=name)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("step")
    axes[0].set_title("training loss per task (log scale)", fontsize=9)
    for name, series in evals.items():
        steps = sorted(series)
        axes[1].plot(steps, [series[s] for s in steps], marker="o", ms=3, label=name)
    axes[1].set_xlabel("step")
    axes[1].set_title("test metrics", fontsize=9)
    for ax in axes:
        if ax.lines:
            ax.legend(fontsize=7)
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
