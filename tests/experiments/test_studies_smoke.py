"""The two studies (Recon, inter-task vs inter-sample conflicts) end to end on tiny settings.

Both run through ``mtlx.training.train`` (observe hook, conflict monitor, caller-built models):
their sources keep no training loop, step, loss or batching of their own.
"""

import importlib.util
import json
import pathlib

import pytest

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[2] / "experiments"
# What a private training loop needs and the trainer now does.
PRIVATE_LOOP = (
    "jax.jit",
    "value_and_jacobian",
    "apply_updates",
    "softmax_cross_entropy",
    "permutation",
    "tx.update",
)


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_study_{name}", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["recon_digits", "conflicts_mtl_vs_stl"])
def test_studies_use_the_trainer(name):
    source = (EXPERIMENTS / f"{name}.py").read_text()
    assert "mtlx.training" in source and "observe" in source
    assert not [p for p in PRIVATE_LOOP if p in source]


def test_recon_study_end_to_end(tmp_path):
    _load("recon_digits").main(
        [
            "--out", str(tmp_path), "--tasks", "left,right", "--search-epochs", "1",
            "--epochs", "1", "--num-train", "96", "--batch-size", "32", "--seeds", "0",
        ]
    )  # fmt: skip
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["selected"] and len(result["search_scores"]) == 3  # conv1, conv2, fc
    for name in ("unsplit", "recon"):
        (run,) = result["runs"][name]
        assert len(run["test_accuracy"]) == 2
        assert set(run["conflict_fraction_remaining"]) == {"0", "-0.02", "-0.05", "-0.1"}
    assert result["parameter_increase"]["added"] > 0
    for figure in ("layer_scores.png", "cosine_histograms.png", "cosine_curves.png"):
        assert (tmp_path / figure).stat().st_size > 0
    assert "| recon |" in (tmp_path / "results.md").read_text()


def test_conflicts_study_end_to_end(tmp_path):
    _load("conflicts_mtl_vs_stl").main(
        [
            "--out", str(tmp_path), "--epochs", "2", "--num-train", "96", "--batch-size", "32",
            "--every", "2", "--num-samples", "4", "--seeds", "0", "--smoke",
        ]
    )  # fmt: skip
    result = json.loads((tmp_path / "results.json").read_text())
    table = result["table"]
    assert {"MTL inter-task", "MTL inter-sample", "STL inter-sample"} <= set(table)
    for label, rows in table.items():
        assert len(rows["per_epoch"]) == 2, label  # one summary per epoch
        for stat in ("cos", "gms", "conflict"):
            mean, std = rows["over_training"][stat]
            assert -1.0 <= mean <= 1.0 and std == 0.0, (label, stat)  # one seed
    assert set(result["test_metrics"]["STL"]) == {"left/accuracy", "right/accuracy"}
    for figure in ("cosine_per_epoch.png", "cosine_histograms.png"):
        assert (tmp_path / figure).stat().st_size > 0
