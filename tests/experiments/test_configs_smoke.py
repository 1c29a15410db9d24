"""Every experiment config builds and trains for two steps on tiny synthetic data of its shape."""

import importlib.util
import pathlib

import numpy as np
import pytest

from mtlx.training import TrainConfig, datasets, train

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[2] / "experiments"
# A training config defines get_config(); the studies and reproductions are scripts.
CONFIGS = sorted(p for p in EXPERIMENTS.glob("*.py") if "def get_config(" in p.read_text())


def _load(path):
    spec = importlib.util.spec_from_file_location(f"_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_benchmark_has_a_config():
    names = {p.stem for p in CONFIGS}
    assert {
        "digits_lenet",
        "multi_mnist_lenet",
        "celeba_resnet18",
        "nyuv2_segnet",
        "cityscapes_segnet",
    } <= names
    # One Multi-Digits config per architecture beyond hard sharing (mtlx.models).
    architectures = ("mmoe", "cgc", "ple", "dselect_k", "cross_stitch", "nddr_cnn", "mtan", "ltb")
    assert {f"digits_{a}" for a in architectures} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_builds_and_runs_two_steps(path):
    module = _load(path)
    assert module.__doc__ and "python -m mtlx.train" in module.__doc__  # command documented
    assert "Expected" in module.__doc__ and "Wall time" in module.__doc__
    config = module.get_config()
    assert isinstance(config, TrainConfig)
    config.validate()
    smoke = module.SMOKE
    tasks = datasets.tasks_of(config.dataset, **config.dataset_kwargs)[: smoke.get("tasks")]
    data = datasets.synthetic(tasks, smoke["image_shape"], num_train=8, num_test=6)
    config = config.replace(
        num_steps=2,
        steps_per_call=2,
        batch_size=4,
        eval_batch_size=4,
        eval_every=0,
        checkpoint_every=0,
        workdir=None,
        progress=False,
        num_devices=None,
        **smoke["changes"],
    )
    result = train(config, dataset=data)
    assert int(result.state.step) == 2
    assert set(result.results) == {t.name for t in tasks}
    for metrics in result.results.values():
        assert all(np.isfinite(v) for v in metrics.values())
