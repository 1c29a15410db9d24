"""The CLI's datasets, optimizers and single-task baselines (Δm without library defaults)."""

import json

import numpy as np
import pytest

from mtlx import train as cli
from mtlx.training import (
    DELTA_M_CONVENTION,
    TrainConfig,
    load_baselines,
    make_optimizer,
    save_baselines,
    single_task_baselines,
    train,
)

TINY = ["--model-kwargs", "hidden=[8]", "--no-progress"]


def _configs(argv):
    return cli.configs_from_args(cli.build_parser().parse_args(argv))


@pytest.mark.parametrize(
    "flags, optimizer, kwargs",
    [
        (["--optimizer", "sgd", "--optimizer-kwargs", "momentum=0.9"], "sgd", {"momentum": 0.9}),
        (["--optimizer", "signum"], "signum", {}),
        (["--optimizer", "sign_sgd"], "sign_sgd", {}),
        (["--optimizer", "adam", "--optimizer-kwargs", '{"b1": 0.8}'], "adam", {"b1": 0.8}),
    ],
    ids=["sgd_momentum", "signum", "sign_sgd", "adam"],
)
def test_each_optimizer_runs_one_step_from_the_cli(flags, optimizer, kwargs, capsys):
    argv = [*flags, "--learning-rate", "0.05", "--steps", "1", "--baselines", "none", *TINY]
    (config,) = _configs(argv)
    assert (config.optimizer, config.optimizer_kwargs, config.learning_rate) == (
        optimizer,
        kwargs,
        0.05,
    )
    assert cli.main([*argv, "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["delta_m"] is None
    for metrics in record["results"].values():
        assert np.isfinite(metrics["accuracy"])


def test_keyword_flags_take_json_or_key_value_pairs():
    (config,) = _configs(
        [
            "--optimizer-kwargs", "momentum=0.9", "nesterov=true",
            "--dataset-kwargs", "tasks=[\"left\", \"sum_parity\"]", "num_train=64",
            "--method-kwargs", '{"c": 0.4}',
            "--method", "cagrad",
            "--lr", "0.1",
        ]
    )  # fmt: skip
    assert config.optimizer_kwargs == {"momentum": 0.9, "nesterov": True}
    assert config.dataset_kwargs == {"tasks": ["left", "sum_parity"], "num_train": 64}
    assert config.method_kwargs == {"c": 0.4} and config.learning_rate == 0.1
    # A new optimizer drops the config's optimizer arguments; a new dataset its arguments.
    (config,) = _configs(["--dataset", "yeast", "--optimizer", "sgd"])
    assert config.dataset == "yeast" and config.dataset_kwargs == {}
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--optimizer-kwargs", "[1, 2]"])


def test_bad_optimizers_and_datasets_fail_clearly(capsys):
    with pytest.raises(ValueError, match="unknown optimizer 'adamm'"):
        make_optimizer("adamm", 0.1)
    with pytest.raises(ValueError, match=r"optax.sgd takes no argument \['betas'\].*momentum"):
        make_optimizer("sgd", 0.1, betas=0.9)
    assert cli.main(["--dataset", "imagenet", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'imagenet'" in err and "yeast" in err and "cifar10_corrupted" in err


def test_single_task_baselines_train_each_task_alone(tmp_path):
    config = TrainConfig(
        num_steps=20, steps_per_call=10, model_kwargs={"hidden": (8,)}, progress=False
    )
    baselines = single_task_baselines(config)
    alone = train(config.replace(method="scalarization", method_kwargs={"weights": [0.0, 1.0]}))
    assert set(baselines) == {"left", "right"}
    assert baselines["right"] == alone.results["right"]
    path = tmp_path / "baselines.json"
    save_baselines(path, baselines, config=config)
    assert load_baselines(path) == baselines
    saved = json.loads(path.read_text())
    assert saved["delta_m"] == DELTA_M_CONVENTION and saved["config"]["num_steps"] == 20
    (tmp_path / "bad.json").write_text('{"left": 0.9}')
    with pytest.raises(ValueError, match="expected"):
        load_baselines(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="--save-baselines"):
        load_baselines(tmp_path / "missing.json")


def test_cli_prints_delta_m_with_trained_or_saved_baselines(tmp_path, capsys):
    path = tmp_path / "b.json"
    args = ["--steps", "20", "--steps-per-call", "10", *TINY]
    assert cli.main([*args, "--save-baselines", str(path)]) == 0
    out = capsys.readouterr()
    assert "training 2 single-task baselines" in out.err
    assert "| method | left accuracy | right accuracy | Δm (%) | time (s) |" in out.out
    assert "Single-task baselines: left accuracy" in out.out and DELTA_M_CONVENTION in out.out
    saved = load_baselines(path)
    assert cli.main([*args, "--baselines", str(path)]) == 0  # reused: no training
    out = capsys.readouterr()
    assert "single-task baselines for" not in out.err and "Δm (%)" in out.out
    assert cli.main([*args, "--baselines", "none"]) == 0
    assert "Δm" not in capsys.readouterr().out
    assert cli.main([*args, "--baselines", str(tmp_path / "nope.json")]) == 2
    assert set(saved) == {"left", "right"}


def test_a_method_takes_its_own_arguments():
    from mtlx.train import parse_method_spec

    assert parse_method_spec("uw_so:temperature=50") == ("uw_so", {"temperature": 50})
    assert parse_method_spec("cagrad:c=0.4,rescale=0") == ("cagrad", {"c": 0.4, "rescale": 0})
    assert parse_method_spec("ew") == ("ew", {})
    with pytest.raises(SystemExit, match="NAME:key=value"):
        parse_method_spec("uw_so:50")


def test_a_learning_rate_grid_is_one_sweep_per_method(capsys):
    argv = ["--method", "ew", "pcgrad", "--lr", "0.001", "0.01", "--steps", "4",
            "--steps-per-call", "2", "--baselines", "none", *TINY]  # fmt: skip
    assert cli.main([*argv, "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [(r["method"], r["learning_rate"]) for r in records] == [
        ("ew", 0.001), ("ew", 0.01), ("pcgrad", 0.001), ("pcgrad", 0.01),
    ]  # fmt: skip
    sweep_row = records[1]["results"]
    alone = train(_configs([*argv[:3], "--lr", "0.01", *argv[6:]])[0])
    for task, metrics in alone.results.items():
        assert sweep_row[task]["accuracy"] == pytest.approx(metrics["accuracy"], abs=0.02)
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "| ew @ lr=0.001 |" in out and "| pcgrad @ lr=0.01 |" in out and "lr=grid" in out
    assert cli.main([*argv, "--workdir", "/tmp/x"]) == 2
    assert "learning-rate grid" in capsys.readouterr().err


def test_a_rerun_with_another_configuration_does_not_resume_silently(tmp_path, capsys):
    argv = ["--steps", "4", "--steps-per-call", "2", "--checkpoint-every", "2", "--baselines",
            "none", "--workdir", str(tmp_path), *TINY]  # fmt: skip
    assert cli.main(argv) == 0
    capsys.readouterr()
    assert cli.main([*argv, "--lr", "0.1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the checkpoint in") and "--no-resume" in err
    assert cli.main([*argv, "--lr", "0.1", "--no-resume"]) == 0
    assert cli.main([*argv, "--lr", "0.1", "--steps", "6"]) == 0
    assert "resumed from step 4" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--lr", "-1"], "learning_rate must be a positive finite number; got -1.0"),
        (["--lr", "nan"], "learning_rate must be a positive finite number"),
        (["--log-every", "-5"], "log_every must be a non-negative integer"),
        (["--chunk-size", "0"], "chunk_size must be a positive integer or None"),
        (["--method", "pcgradd"], "unknown method 'pcgradd'"),
    ],
)
def test_bad_settings_fail_before_any_data_loads(flags, message, capsys, monkeypatch):
    from mtlx.training import datasets

    def no_loading(*args, **kwargs):
        raise AssertionError("data loaded before the settings were checked")

    monkeypatch.setattr(datasets, "load", no_loading)
    assert cli.main([*flags, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_validate_checks_random_row_weights_and_types():
    with pytest.raises(ValueError, match="random_row_weights must be None or one of"):
        TrainConfig(random_row_weights="gauss").validate()
    with pytest.raises(ValueError, match="batch_size must be a positive integer; got 2.5"):
        TrainConfig(batch_size=2.5).validate()
    assert TrainConfig(random_row_weights="dirichlet").validate().random_row_weights == "dirichlet"


def test_the_conflict_monitor_from_the_cli(capsys):
    argv = ["--method", "pcgrad", "--steps", "4", "--steps-per-call", "2", "--monitor-conflicts",
            "2", "--baselines", "none", *TINY]  # fmt: skip
    (config,) = _configs(argv)
    assert config.conflict_monitor_every == 2
    (guarded,) = _configs([*argv, "--skip-nonfinite"])
    assert guarded.skip_nonfinite and not config.skip_nonfinite
    assert cli.main([*argv, "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    whole = record["conflicts"]["<all shared>"]
    assert whole["observations"] == 2  # updates 1 and 3 of 4, one task pair
    assert -1.0 <= whole["mean_cosine"] <= 1.0
    assert cli.main(argv) == 0
    assert "gradient conflicts over all shared parameters" in capsys.readouterr().out
    with pytest.raises(ValueError, match="conflict_monitor_every must be a non-negative"):
        TrainConfig(conflict_monitor_every=-1).validate()
