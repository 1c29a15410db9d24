"""The trainer end to end on the default dataset: metrics, logs, checkpoints, errors, the CLI."""

import json
import pathlib

import jax
import numpy as np
import pytest

from mtlx import train as cli
from mtlx.training import Checkpointer, NonFiniteLossError, TrainConfig, datasets, train

# A small MLP keeps every compile short; the data is the real default (Multi-Digits).
SMALL = {"model_kwargs": {"hidden": (32,)}, "progress": False}


def _leaves(tree):
    """Leaves as NumPy arrays, PRNG keys as their key data (comparable bit for bit)."""
    out = []
    for x in jax.tree.leaves(tree):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        out.append(np.asarray(x))
    return out


def test_default_dataset_end_to_end(tmp_path):
    config = TrainConfig(
        num_steps=200,
        steps_per_call=50,
        log_every=100,
        eval_every=100,
        workdir=str(tmp_path),
        baselines={"left": {"accuracy": 0.9}, "right": {"accuracy": 0.9}},
        **SMALL,
    )
    assert TrainConfig().baselines is None  # no measured numbers as library defaults
    result = train(config)
    assert [t.name for t in result.tasks] == ["left", "right"]
    for task in ("left", "right"):
        assert result.results[task]["accuracy"] > 0.7  # 10 classes: chance is 0.1
    expected = 50 * sum(result.results[t]["accuracy"] / 0.9 - 1 for t in ("left", "right"))
    np.testing.assert_allclose(result.delta_m, expected, rtol=1e-6)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    train_records = [r for r in records if "train/loss/left" in r]
    assert [r["step"] for r in train_records] == [100, 200]
    assert train_records[1]["train/loss/left"] < train_records[0]["train/loss/left"]
    assert "eval/left/accuracy" in records[-1] and "eval/delta_m" in records[-1]
    assert (tmp_path / "curves.png").stat().st_size > 0  # the run's curves beside its log
    assert any(r["step"] == 100 and "eval/right/accuracy" in r for r in records)  # eval_every


def test_checkpoint_resume_equals_an_uninterrupted_run_bit_for_bit(tmp_path):
    # PCGrad keeps a PRNG key in its state; 60 steps of batch 64 cross an epoch boundary (21
    # batches per epoch), so the data position matters too.
    base = TrainConfig(method="pcgrad", num_steps=60, steps_per_call=10, log_every=10, **SMALL)
    uninterrupted = train(base)
    first = train(base.replace(num_steps=30, checkpoint_every=30, workdir=str(tmp_path)))
    assert int(first.state.step) == 30
    resumed = train(base.replace(checkpoint_every=30, workdir=str(tmp_path)))
    assert int(resumed.state.step) == 60
    for a, b in zip(_leaves(uninterrupted.state), _leaves(resumed.state), strict=True):
        np.testing.assert_array_equal(a, b)
    assert resumed.results == uninterrupted.results
    with Checkpointer(tmp_path / "checkpoints") as ckpt:
        assert ckpt.latest_step() == 60
        _, position, metadata = ckpt.restore(like=resumed.state)
    assert position == {"step": 60} and metadata["method"] == "pcgrad"


def test_resume_refuses_a_checkpoint_of_another_configuration(tmp_path, capsys):
    base = TrainConfig(num_steps=20, steps_per_call=10, checkpoint_every=10, **SMALL)
    base = base.replace(workdir=str(tmp_path), progress=False)
    train(base)
    with pytest.raises(ValueError, match=r"another configuration \(learning_rate: 0.001 -> 0.1\)"):
        train(base.replace(learning_rate=0.1))
    with pytest.raises(ValueError, match=r"method: 'ew' -> 'pcgrad'.*--no-resume"):
        train(base.replace(method="pcgrad"))
    with pytest.raises(ValueError, match="model_kwargs"):  # checked before the state is restored
        train(base.replace(model_kwargs={"hidden": (7,)}))
    capsys.readouterr()
    longer = train(base.replace(num_steps=30, log_every=5))  # may change: length, logging
    assert int(longer.state.step) == 30
    assert f"resumed from step 20 of {tmp_path / 'checkpoints'}" in capsys.readouterr().err
    fresh = train(base.replace(learning_rate=0.1, resume=False))
    assert int(fresh.state.step) == 20
    assert "moved to" in capsys.readouterr().err
    assert (tmp_path / "checkpoints.replaced-1").is_dir()  # the earlier run's, kept
    again = train(base.replace(learning_rate=0.1, num_steps=30))  # resumes the new run
    assert int(again.state.step) == 30


def test_non_finite_loss_stops_with_the_task_name():
    data = datasets.digits(num_train=64, num_test=8)
    data.train["image"][:] = np.nan
    config = TrainConfig(num_steps=2, steps_per_call=1, batch_size=32, **SMALL)
    with pytest.raises(NonFiniteLossError, match=r"task 'left' is nan at step 1"):
        train(config, dataset=data)


def test_skip_nonfinite_skips_bad_batches_and_counts_them(capsys):
    data = datasets.digits(num_train=256, num_test=64)
    data.train["image"][:8] = np.nan  # some batches of every epoch hold a NaN example
    config = TrainConfig(
        num_steps=16, steps_per_call=8, batch_size=32, skip_nonfinite=True, method="pcgrad",
        **SMALL,
    )  # fmt: skip
    result = train(config, dataset=data)
    skipped = result.history[-1]["skipped_updates"]
    assert 0 < skipped < 16  # the NaN batches, not the others
    assert "updates skipped" in capsys.readouterr().err
    for leaf in jax.tree.leaves(result.state.params):
        assert np.all(np.isfinite(leaf))
    clean = datasets.digits(num_train=256, num_test=64)
    assert train(config, dataset=clean).history[-1]["skipped_updates"] == 0


def test_unknown_names_fail_clearly():
    with pytest.raises(ValueError, match="unknown method 'nope'.*Available: .*pcgrad"):
        train(TrainConfig(method="nope", num_steps=1, steps_per_call=1, **SMALL))
    with pytest.raises(ValueError, match="unknown dataset"):
        datasets.load("imagenet")
    with pytest.raises(ValueError, match="multiple of steps_per_call"):
        TrainConfig(num_steps=15, steps_per_call=10).validate()


def test_cli_help_and_unknown_method(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    assert "--method" in capsys.readouterr().out
    assert cli.main(["--method", "nope"]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err


def test_cli_runs_several_methods_and_prints_a_table(capsys):
    args = [
        "--method",
        "ew",
        "UW-SO",
        "--steps",
        "20",
        "--steps-per-call",
        "10",
        "--model-kwargs",
        '{"hidden": [16]}',
        "--no-progress",
    ]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "| method | left accuracy | right accuracy | Δm (%) | time (s) |" in out
    assert "| ew |" in out and "| uw_so |" in out


def test_plot_curves_reads_logs_and_refuses_empty_ones(tmp_path):
    from mtlx.training import curves

    records = [
        {"step": 10, "train/loss/a": 1.0, "train/loss/b": 2.0},
        {"step": 20, "train/loss/a": 0.5, "train/loss/b": 1.0, "eval/a/accuracy": 0.7},
    ]
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    assert curves.read_log(log) == records
    path = curves.plot_curves(records, tmp_path / "sub" / "curves.png")
    assert pathlib.Path(path).stat().st_size > 0
    with pytest.raises(ValueError, match="no record has a step"):
        curves.plot_curves([{"method": "ew"}, {"step": 1, "eval/loss/a": 1.0}], tmp_path / "x.png")


@pytest.mark.parametrize("damage", ["array", "state_metadata", "metadata"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, capsys, damage):
    base = TrainConfig(num_steps=20, steps_per_call=10, checkpoint_every=10, **SMALL)
    base = base.replace(workdir=str(tmp_path))
    uninterrupted = train(base.replace(workdir=None, num_steps=30))
    train(base)
    newest = tmp_path / "checkpoints" / "20"
    if damage == "array":  # a truncated array file of the state
        victim = max((newest / "state").rglob("d/*"), key=lambda f: f.stat().st_size)
    elif damage == "state_metadata":
        victim = newest / "state" / "_METADATA"
    else:
        victim = newest / "metadata" / "metadata"
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    capsys.readouterr()
    resumed = train(base.replace(num_steps=30))  # from step 10, and saves 20 and 30 anew
    err = capsys.readouterr().err
    assert "checkpoint 20" in err and "is damaged" in err and "resumed from step 10" in err
    assert (tmp_path / "checkpoints.damaged" / "20").is_dir()
    for a, b in zip(_leaves(uninterrupted.state), _leaves(resumed.state), strict=True):
        np.testing.assert_array_equal(a, b)
    with Checkpointer(tmp_path / "checkpoints") as ckpt:
        assert ckpt.all_steps()[-2:] == [20, 30]
