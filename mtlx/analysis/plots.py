"""Figures of gradient conflicts, written to files (matplotlib is imported only when drawing)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError('mtlx.analysis.plots needs matplotlib: pip install "mtlx[train]"') from e
    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike) -> str:
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def plot_conflict_histograms(
    cosines: Mapping[str, Any],
    path: str | os.PathLike,
    *,
    thresholds: Sequence[float] = (0.0,),
    bins: int = 40,
    columns: int = 3,
    title: str = "Cosine similarity of task gradients",
) -> str:
    """One histogram panel of cosines per task pair (or any label), thresholds as dashed lines.

    Args:
      cosines: ``{label: cosines}``, e.g. ``{"left-right": per-step cosines}``; a value may be a
        mapping ``{series: cosines}`` to overlay several runs in one panel (e.g. before / after a
        Recon split).
      path: the image file to write.
      thresholds: conflict thresholds ``S`` to mark; each panel's title gives, per series, the
        fraction of cosines below the lowest one.
      bins: histogram bins over ``[-1, 1]``.
      columns: panels per row.
      title: figure title.

    Returns:
      The path written.
    """
    plt = _pyplot()
    labels = list(cosines)
    cols = max(min(len(labels), columns), 1)
    rows = max((len(labels) + cols - 1) // cols, 1)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    edges = np.linspace(-1, 1, bins + 1)
    s_min = min(thresholds)
    for ax, label in zip(axes.ravel(), labels):
        series = cosines[label]
        if not isinstance(series, Mapping):
            series = {"": series}
        fractions = []
        for name, values in series.items():
            values = np.asarray(values, dtype=np.float64).ravel()
            values = values[np.isfinite(values)]
            ax.hist(values, bins=edges, alpha=0.6 if len(series) > 1 else 0.8, label=name or None)
            frac = float(np.mean(values < s_min)) if values.size else float("nan")
            fractions.append(f"{name + ' ' if name else ''}{100 * frac:.1f}%")
        for s in thresholds:
            ax.axvline(s, color="tab:red", linestyle="--", linewidth=1)
        ax.set_title(f"{label}: cos < {s_min:g}: " + ", ".join(fractions), fontsize=8)
        ax.set_xlabel("cosine")
        if len(series) > 1:
            ax.legend(fontsize=8)
    for ax in axes.ravel()[len(labels) :]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("count")
    fig.suptitle(title)
    return _save(fig, path)


def plot_layer_scores(
    scores: Mapping[str, float],
    path: str | os.PathLike,
    *,
    selected: Sequence[str] = (),
    title: str = "S-conflict score per layer",
    ylabel: str = "conflicting (step, task pair)s",
) -> str:
    """Bar chart of per-layer conflict scores in layer order, the selected layers highlighted
    (the figure Recon uses to pick its layers).

    Args:
      scores: ``{layer: score}`` (in the order to draw: pass layer order, not ranking order).
      path: the image file to write.
      selected: layers to highlight (the split ones).
      title: figure title.
      ylabel: y-axis label.
    """
    plt = _pyplot()
    names = list(scores)
    values = [float(scores[k]) for k in names]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(names) + 2), 3.5))
    colors = ["tab:red" if k in set(selected) else "tab:gray" for k in names]
    ax.bar(range(len(names)), values, color=colors)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title + (" (red: selected)" if selected else ""), fontsize=10)
    return _save(fig, path)


def plot_cosine_curves(
    curves: Mapping[str, Sequence[float] | np.ndarray],
    path: str | os.PathLike,
    *,
    steps: Sequence[int] | np.ndarray | None = None,
    bands: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
    smooth: int = 1,
    title: str = "Cosine similarity over training",
    xlabel: str = "step",
    ylabel: str = "cosine",
) -> str:
    """Cosine (or any statistic) over training, one line per label, optional shaded bands.

    Args:
      curves: ``{label: values over steps}``.
      path: the image file to write.
      steps: x values (default ``0, 1, ...``).
      bands: ``{label: (low, high)}`` drawn as a shaded band (e.g. 2.5 / 97.5 percentiles).
      smooth: moving-average window.
      title, xlabel, ylabel: labels.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, values in curves.items():
        y = np.asarray(values, dtype=np.float64)
        if smooth > 1 and y.size >= smooth:
            y = np.convolve(y, np.ones(smooth) / smooth, mode="valid")
        x = np.arange(y.size) if steps is None else np.asarray(steps)[: y.size]
        (line,) = ax.plot(x, y, label=label)
        if bands and label in bands:
            lo, hi = (np.asarray(b, dtype=np.float64)[: y.size] for b in bands[label])
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2)
    ax.axhline(0.0, color="black", linewidth=0.5)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)
