"""mtlx.analysis.plots: every figure is written to a file."""

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from mtlx.analysis import plots  # noqa: E402


def test_figures_are_written(tmp_path):
    rng = np.random.default_rng(0)
    paths = [
        plots.plot_conflict_histograms(
            {"left-right": rng.uniform(-1, 1, 100)}, tmp_path / "hist.png", thresholds=(0.0, -0.1)
        ),
        plots.plot_layer_scores(
            {"conv1": 3, "conv2": 9, "fc": 1}, tmp_path / "scores.png", selected=["conv2"]
        ),
        plots.plot_conflict_histograms(
            {
                "0-1": {"before": rng.uniform(-1, 1, 50), "after": rng.uniform(0, 1, 50)},
                "0-2": [0.5],
            },
            tmp_path / "overlay.png",
            columns=1,
        ),
        plots.plot_cosine_curves(
            {"conv1": rng.uniform(-1, 1, 50)},
            tmp_path / "sub" / "curves.png",
            bands={"conv1": (-np.ones(50), np.ones(50))},
            smooth=5,
        ),
    ]
    for p in paths:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
