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


def fake_sweep(calls):
    """A sweep function whose model k has accuracy 0.5 + learning_rate[k] + 0.01 * seed."""

    def sweep(config, hyperparams=None, *, learning_rate=None, dataset=None):
        del dataset
        calls.append((config.method, config.seed, hyperparams, learning_rate))
        if learning_rate is None:  # the single-task base: one-hot weights
            k = len(hyperparams["weights"])
            results = [{"a": {"accuracy": 0.8}, "b": {"accuracy": 0.7}}] * k
        else:
            results = [
                {"a": {"accuracy": 0.5 + r + 0.01 * config.seed}, "b": {"accuracy": 0.6}}
                for r in np.asarray(learning_rate).tolist()
            ]
        return types.SimpleNamespace(results=results, tasks=(), seconds=1.0)

    return sweep


def test_a_learning_rate_grid_is_one_sweep_per_label_and_seed(tmp_path):
    calls = []
    runs = [("adam/ew", TrainConfig(method="ew")), ("sgd/ew", TrainConfig(method="ew"))]
    rates = [0.1, 0.2]

    study = study_lib.run_study(
        runs,
        [0, 1],
        out_dir=tmp_path,
        sweep_fn=fake_sweep(calls),  # with the default train_fn: the grid goes through it
        log=None,
        learning_rates=rates,
    )
    assert study.labels == ["adam/ew@lr=0.1", "adam/ew@lr=0.2", "sgd/ew@lr=0.1", "sgd/ew@lr=0.2"]
    grid_calls = [c for c in calls if c[3] is not None]
    assert len(grid_calls) == 4  # 2 labels x 2 seeds, each one sweep over both rates
    np.testing.assert_allclose(grid_calls[0][3], rates)
    runs_of = study.runs("sgd/ew@lr=0.2")
    assert [r.results["a"]["accuracy"] for r in runs_of] == pytest.approx([0.7, 0.71])
    # Δm against the base a = 0.8, b = 0.7 (seed 0, lr 0.2): mean(-0.1 / 0.8, -0.1 / 0.7) in %.
    np.testing.assert_allclose(runs_of[0].delta_m, 100 * np.mean([-0.1 / 0.8, -0.1 / 0.7]))
    # Resume: every grid point is read back, nothing is swept again.
    again = []
    study_lib.run_study(
        runs, [0, 1], out_dir=tmp_path, sweep_fn=fake_sweep(again), log=None, learning_rates=rates
    )
    assert again == []
    with pytest.raises(ValueError, match="at least one rate"):
        study_lib.run_study(runs, [0], sweep_fn=fake_sweep([]), log=None, learning_rates=[])


def test_each_label_can_have_its_own_learning_rate_grid():
    calls = []
    runs = [("adam/ew", TrainConfig(method="ew")), ("sgd/ew", TrainConfig(method="ew"))]
    grids = {"adam/ew": [1e-3, 1e-2], "sgd/ew": [0.1, 0.3, 1.0]}
    study = study_lib.run_study(
        runs, [0], sweep_fn=fake_sweep(calls), log=None, learning_rates=grids
    )
    assert study.labels == [
        "adam/ew@lr=0.001", "adam/ew@lr=0.01", "sgd/ew@lr=0.1", "sgd/ew@lr=0.3", "sgd/ew@lr=1",
    ]  # fmt: skip
    np.testing.assert_allclose([c[3] for c in calls if c[3] is not None][1], [0.1, 0.3, 1.0])
    with pytest.raises(ValueError, match="'sgd/ew'"):
        study_lib.run_study(
            runs, [0], sweep_fn=fake_sweep([]), log=None, learning_rates={"adam/ew": [1e-3]}
        )
