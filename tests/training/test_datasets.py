"""The trainer reaches every registered dataset by name; the synthetic stand-ins follow the kinds."""

import importlib.util
import time

import numpy as np
import pytest

from mtlx import data
from mtlx.training import Task, TrainConfig, datasets, train

SMALL = {"model_kwargs": {"hidden": (16,)}, "progress": False}


def test_every_loader_is_a_trainer_dataset():
    assert set(datasets.names()) >= {
        "digits", "yeast", "multi_mnist", "celeba", "cifar10_corrupted", "nyuv2", "cityscapes",
        "synthetic",
    }  # fmt: skip
    for name in datasets.names():
        if name == "synthetic":
            continue
        tasks = datasets.tasks_of(name)
        assert tasks and all(isinstance(t, Task) for t in tasks)
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        datasets.load("imagenet")
    with pytest.raises(ValueError, match="no fixed task layout"):
        datasets.tasks_of("synthetic")


@pytest.mark.parametrize(
    "name, kwargs, instruction",
    [
        ("cifar10_corrupted", {"corruption": "fog", "severity": 3}, "cifar10_corrupted/fog_3"),
        ("multi_mnist", {}, "tfds build mnist"),
        ("nyuv2", {}, "python -m mtlx.data nyuv2"),
    ],
)
def test_tfds_datasets_fail_fast_from_the_trainer(name, kwargs, instruction, tmp_path):
    pytest.importorskip("tensorflow_datasets")
    config = TrainConfig(dataset=name, dataset_kwargs={**kwargs, "data_dir": str(tmp_path)})
    start = time.perf_counter()
    with pytest.raises(data.DatasetNotFoundError, match=instruction):
        train(config)
    assert time.perf_counter() - start < 5.0


@pytest.mark.skipif(importlib.util.find_spec("river") is None, reason="needs river (yeast extra)")
def test_yeast_trains_by_name_with_an_mlp():
    config = TrainConfig(dataset="yeast", num_steps=100, steps_per_call=50, batch_size=64, **SMALL)
    result = train(config)
    assert len(result.tasks) == 14 and result.tasks[0].name == "label_1"
    # mlp_hps gets in_features = 103 and two logits per task from the data and the tasks.
    assert result.state.params["heads"]["head"]["kernel"].shape == (14, 16, 2)
    accuracies = [m["accuracy"] for m in result.results.values()]
    assert np.mean(accuracies) > 0.7  # most labels are rare: well above chance after 100 steps


def test_synthetic_targets_follow_each_kind():
    tasks = (
        Task("c", "classification", 3),
        Task("s", "segmentation", 4),
        Task("d", "depth"),
        Task("n", "normal"),
        Task("r", "regression", 2),
    )
    ds = datasets.synthetic(tasks, (8, 8, 3), num_train=5, num_test=2)
    assert ds.train["c"].shape == (5,) and ds.train["s"].shape == (5, 8, 8)
    assert ds.train["d"].shape == (5, 8, 8, 1) and ds.train["n"].shape == (5, 8, 8, 3)
    assert ds.train["r"].shape == (5, 2) and ds.train["r"].dtype == np.float32
    only_classes = datasets.synthetic(tasks[:1] * 1, (4,), num_train=5)
    assert only_classes.train["labels"].shape == (5, 1)  # the benchmark layout
