"""Yeast, read from the CSV inside the river wheel: shapes, dtypes, determinism, the extra."""

import importlib.util

import numpy as np
import pytest

from mtlx import data
from mtlx.data import yeast

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("river") is None, reason="river (the yeast extra) is not installed"
)


def test_splits_have_the_benchmark_shapes_and_dtypes():
    train, test = data.load_yeast("train"), data.load_yeast("test")
    assert train["image"].shape == (1500, 103) and test["image"].shape == (917, 103)
    assert train["labels"].shape == (1500, 14) and test["labels"].shape == (917, 14)
    assert train["image"].dtype == np.float32 and train["labels"].dtype == np.int32
    assert set(np.unique(train["labels"])) == {0, 1}
    np.testing.assert_allclose(train["image"].mean(0), 0.0, atol=1e-5)  # train statistics
    np.testing.assert_allclose(train["image"].std(0), 1.0, rtol=1e-4)
    assert abs(float(test["image"].mean())) < 0.1
    assert len(data.YEAST_TASKS) == 14 and data.YEAST_TASKS[0] == "label_1"


def test_the_split_is_deterministic_by_seed_and_covers_every_gene():
    a, b = data.load_yeast("train", seed=3), data.load_yeast("train", seed=3)
    np.testing.assert_array_equal(a["image"], b["image"])
    other = data.load_yeast("train", seed=4)
    assert not np.array_equal(a["image"], other["image"])
    raw = {
        k: data.load_yeast(s, seed=3, standardize=False)
        for k, s in (("tr", "train"), ("te", "test"))
    }
    rows = np.concatenate([raw["tr"]["image"], raw["te"]["image"]])
    assert len(np.unique(rows, axis=0)) == yeast.NUM_EXAMPLES  # a partition: no gene twice
    small = data.load_yeast("test", num_train=2000)
    assert small["image"].shape == (417, 103)
    with pytest.raises(ValueError, match="split"):
        data.load_yeast("validation")
    with pytest.raises(ValueError, match="num_train"):
        data.load_yeast(num_train=2417)


def test_registered_with_fourteen_binary_tasks():
    ds = data.load_dataset("yeast", seed=1)
    assert [t.name for t in ds.tasks] == list(data.YEAST_TASKS)
    assert {(t.kind, t.num_classes) for t in ds.tasks} == {("classification", 2)}
    assert data.dataset_tasks("yeast") == ds.tasks
    np.testing.assert_array_equal(ds.test["labels"], data.load_yeast("test", seed=1)["labels"])


def test_without_river_the_error_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "river" else real(name, *a)
    )
    with pytest.raises(ImportError, match=r'pip install "mtlx\[yeast\]"'):
        yeast.yeast_path()
