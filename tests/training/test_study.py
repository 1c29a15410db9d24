"""The multi-seed study runner: records, resume, Δm against the single-task base, paired CIs."""

import json
import types

import numpy as np
import pytest

from mtlx.training import study as study_lib
from mtlx.training.config import TrainConfig


def fake_train(quality):
    """A train function whose accuracy is quality[method] + a per-seed offset (no training)."""
    calls = []

    def train(config, dataset=None):
        del dataset
        calls.append((config.method, config.seed, tuple(config.method_kwargs.get("weights", ()))))
        if config.method == "scalarization":
            level = 0.9
        else:
            level = quality[config.method]
        acc = level + 0.01 * config.seed
        results = {"a": {"accuracy": acc}, "b": {"accuracy": acc - 0.1}}
        return types.SimpleNamespace(results=results, tasks=())

    train.calls = calls
    return train


def test_study_records_delta_m_and_paired_intervals(tmp_path):
    train = fake_train({"ew": 0.9, "good": 0.95})
    runs = [("ew", TrainConfig(method="ew")), ("good", TrainConfig(method="good"))]
    study = study_lib.run_study(runs, [0, 1, 2], out_dir=tmp_path, train_fn=train, log=None)
    # 2 methods x 3 seeds + 2 single-task runs x 3 seeds.
    assert len(train.calls) == 12
    assert {c[2] for c in train.calls if c[0] == "scalarization"} == {(1.0, 0.0), (0.0, 1.0)}
    # The base is the mean over seeds of the single-task runs: a = 0.91, b = 0.81.
    np.testing.assert_allclose(study.base["a"]["accuracy"], 0.91)
    ew = study.summary("ew")
    np.testing.assert_allclose(ew["delta_m"][0], 100 * np.mean([0.0, 0.0]), atol=1e-9)
    good = study.summary("good")
    expected = 100 * np.mean([0.05 / 0.91, 0.05 / 0.81])
    np.testing.assert_allclose(good["delta_m"][0], expected, rtol=1e-9)
    d = study.paired_delta_m("good", "ew")
    np.testing.assert_allclose(d.mean, expected, rtol=1e-9)
    assert d.significant and d.low <= d.mean <= d.high
    table = study.markdown("ew")
    assert "Δm − Δm(ew)" in table and "positive = better" in table and "3 seeds" in table
    saved = json.loads((tmp_path / "study.json").read_text())
    assert saved["summary"]["good"]["delta_m"][0] == pytest.approx(expected)

    # Resume: every run is read back from its JSON file, none trained again.
    again = fake_train({"ew": 0.0, "good": 0.0})
    resumed = study_lib.run_study(runs, [0, 1, 2], out_dir=tmp_path, train_fn=again, log=None)
    assert again.calls == []
    assert resumed.summary("good")["delta_m"][0] == pytest.approx(expected)


def test_paired_difference_matches_the_t_interval():
    a, b = [1.0, 2.0, 4.0], [0.5, 1.0, 2.5]
    d = study_lib.paired_difference(a, b)
    diffs = np.array([0.5, 1.0, 1.5])
    half = 4.302652729911275 * diffs.std(ddof=1) / np.sqrt(3)
    np.testing.assert_allclose([d.mean, d.low, d.high], [1.0, 1.0 - half, 1.0 + half], rtol=1e-6)
    assert study_lib.paired_difference([1.0], [0.0]).n == 1
    with pytest.raises(ValueError, match="equal lengths"):
        study_lib.paired_difference([1.0], [1.0, 2.0])


def test_bad_studies_are_refused():
    with pytest.raises(ValueError, match="unique"):
        study_lib.run_study(
            [("a", TrainConfig()), ("a", TrainConfig())], [0], train_fn=fake_train({})
        )
    with pytest.raises(ValueError, match="single-task"):
        study_lib.run_study([("stl/a", TrainConfig())], [0], train_fn=fake_train({}))
