"""The dataset registry: every loader registered beside it, lookups and clear errors."""

import pathlib

import numpy as np
import pytest

from mtlx import data
from mtlx.data import registry

tfds = pytest.importorskip("tensorflow_datasets")
pytest.importorskip("array_record")


def test_every_loader_is_registered():
    assert set(data.dataset_names()) >= {
        "digits",
        "yeast",
        "multi_mnist",
        "celeba",
        "cifar10_corrupted",
        "nyuv2",
        "cityscapes",
    }
    entry = data.get_dataset("digits")
    assert entry.load.__module__ == "mtlx.data.digits"  # registered beside its loader
    for name in ("multi_mnist", "celeba", "cifar10_corrupted", "nyuv2", "cityscapes"):
        assert data.get_dataset(name).load.__module__ == f"mtlx.data.{name}"


def test_task_layouts_without_data():
    assert data.dataset_tasks("digits", tasks=("left", "sum_parity")) == (
        data.TaskSpec("left", "classification", 10),
        data.TaskSpec("sum_parity", "classification", 2),
    )
    assert [t.kind for t in data.dataset_tasks("nyuv2")] == ["segmentation", "depth", "normal"]
    assert data.dataset_tasks("cityscapes", num_classes=19)[0].num_classes == 19
    assert len(data.dataset_tasks("celeba")) == 40
    assert data.dataset_tasks("cifar10_corrupted") == (
        data.TaskSpec("label", "classification", 10),
    )
    assert data.dataset_tasks("multi_mnist")[1].name == "right"


def test_digits_entry_loads_the_loaders_arrays():
    ds = data.load_dataset("digits", num_train=10, num_test=5, seed=2)
    np.testing.assert_array_equal(
        ds.train["image"], data.load_multi_digits("train", num_examples=10, seed=2)["image"]
    )
    assert ds.test["labels"].shape == (5, 2) and ds.input_key == "image"


def test_unknown_names_and_arguments_fail_clearly():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'; choose from .*yeast"):
        data.load_dataset("imagenet")
    with pytest.raises(ValueError, match="dataset 'digits'.*dataset_kwargs"):
        data.load_dataset("digits", image_size=3)
    with pytest.raises(ValueError, match="unknown tasks"):
        data.dataset_tasks("digits", tasks=("middle",))


def test_register_and_conflicts(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @data.register_dataset("tiny_test")
    def tiny(n: int = 3) -> data.Dataset:
        """A tiny dataset."""
        arrays = {"image": np.zeros((n, 2), np.float32), "labels": np.zeros((n, 1), np.int32)}
        return data.Dataset((data.TaskSpec("y", "classification", 2),), arrays, arrays)

    assert data.load_dataset("tiny_test", n=4).train["image"].shape == (4, 2)
    assert data.get_dataset("tiny_test").description == "A tiny dataset."
    with pytest.raises(ValueError, match="no fixed task layout"):
        data.dataset_tasks("tiny_test")
    with pytest.raises(ValueError, match="already registered"):
        data.register_dataset("digits")(tiny)


def _looks_prepared(data_dir, name, version):
    folder = pathlib.Path(data_dir, *name.split("/"), version)
    folder.mkdir(parents=True)
    (folder / "dataset_info.json").write_text("{}")
    (folder / f"{name.split('/')[0]}-test.array_record-00000-of-00001").touch()


def test_cifar10_corrupted_entry_splits_by_seed(tmp_path):
    _looks_prepared(tmp_path, "cifar10_corrupted/fog_2", "1.0.0")
    with tfds.testing.mock_data(num_examples=20):
        a = data.load_dataset("cifar10_corrupted", corruption="fog", severity=2, data_dir=tmp_path)
        b = data.load_dataset("cifar10_corrupted", corruption="fog", severity=2, data_dir=tmp_path)
    assert a.train["image"].shape == (16, 32, 32, 3) and a.test["labels"].shape == (4, 1)
    np.testing.assert_array_equal(a.test["image"], b.test["image"])
    with pytest.raises(data.DatasetNotFoundError, match="cifar10_corrupted/fog_3"):
        data.load_dataset("cifar10_corrupted", corruption="fog", severity=3, data_dir=tmp_path)
    with pytest.raises(ValueError, match="test_fraction"):
        data.load_dataset("cifar10_corrupted", test_fraction=1.5, data_dir=tmp_path)
