"""TFDS loaders: fast failure without data (no network), and each loader on data made here.

Catalog datasets (mnist, fashion_mnist, celeb_a, cifar10_corrupted) are read under
``tfds.testing.mock_data`` (random examples with the real feature specs) in a data directory
that looks prepared; NYUv2 and Cityscapes are prepared for real from a tiny MTAN-layout folder.
"""

import ast
import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")
pytest.importorskip("array_record")

from mtlx import data  # noqa: E402
from mtlx.data import __main__ as cli  # noqa: E402
from mtlx.data import multi_mnist  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a loader tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _looks_prepared(data_dir, name, version):
    """The files a prepared array_record dataset has; mock_data supplies the examples."""
    folder = pathlib.Path(data_dir, *name.split("/"), version)
    folder.mkdir(parents=True)
    (folder / "dataset_info.json").write_text("{}")
    (folder / f"{name.split('/')[0]}-test.array_record-00000-of-00001").touch()


MISSING = [
    (lambda d: data.load_multi_mnist(data_dir=d), "tfds build mnist --file_format=array_record"),
    (lambda d: data.load_multi_mnist(variant="fashion", data_dir=d), "tfds build fashion_mnist"),
    (lambda d: data.load_celeba(data_dir=d), "tfds build celeb_a"),
    (lambda d: data.load_cifar10_corrupted("fog", 3, data_dir=d), "cifar10_corrupted/fog_3"),
    (lambda d: data.load_nyuv2(data_dir=d), "python -m mtlx.data nyuv2 --manual_dir"),
    (lambda d: data.load_cityscapes(num_classes=19, data_dir=d), "--num_classes 19"),
]


@pytest.mark.parametrize("load, instruction", MISSING)
def test_missing_data_fails_fast_with_instructions(load, instruction, tmp_path, no_network):
    start = time.perf_counter()
    with pytest.raises(data.DatasetNotFoundError) as error:
        load(str(tmp_path))
    assert time.perf_counter() - start < 2.0
    assert instruction in str(error.value) and str(tmp_path) in str(error.value)


def test_tfrecord_build_is_reported(tmp_path, no_network):
    folder = tmp_path / "mnist" / "3.0.1"
    folder.mkdir(parents=True)
    (folder / "dataset_info.json").write_text("{}")
    (folder / "mnist-train.tfrecord-00000-of-00001").touch()
    with pytest.raises(data.DatasetNotFoundError, match="not in array_record format"):
        data.load_multi_mnist(data_dir=tmp_path)


def test_default_data_dir_follows_tfds(monkeypatch, tmp_path):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    assert data.default_data_dir() == str(tmp_path)
    with pytest.raises(data.DatasetNotFoundError, match=str(tmp_path)):
        data.load_celeba()


def test_overlay_follows_sener_and_koltun():
    left = np.zeros((1, 28, 28), np.uint8)
    right = np.zeros((1, 28, 28), np.uint8)
    left[0, 10, 10], left[0, 27, 27] = 100, 50
    right[0, 0, 0], right[0, 21, 21] = 200, 30
    canvas = multi_mnist.overlay(left, right)[0, ..., 0]
    assert canvas.shape == (36, 36)
    assert canvas[10, 10] == 100 and canvas[6, 6] == 200  # right item shifted by 6 pixels
    assert canvas[27, 27] == 50  # the overlap keeps the brighter pixel
    assert multi_mnist.overlay(left, right, image_size=28).shape == (1, 28, 28, 1)


@pytest.mark.parametrize("variant", ["mnist", "fashion_mnist"])
def test_multi_mnist_from_mock_sources(variant, tmp_path, no_network):
    for name in ("mnist", "fashion_mnist"):
        _looks_prepared(tmp_path, name, "3.0.1")
    with tfds.testing.mock_data(num_examples=12):
        a = data.load_multi_mnist("test", variant=variant, data_dir=tmp_path, seed=1)
        b = data.load_multi_mnist("test", variant=variant, data_dir=tmp_path, seed=1)
        small = data.load_multi_mnist(
            variant=variant, data_dir=tmp_path, image_size=28, num_examples=5
        )
    assert a["image"].shape == (12, 36, 36, 1) and a["image"].dtype == np.float32
    assert a["labels"].shape == (12, 2) and a["labels"].dtype == np.int32
    assert 0.0 <= a["image"].min() and a["image"].max() <= 1.0
    assert ((0 <= a["labels"]) & (a["labels"] < 10)).all()
    np.testing.assert_array_equal(a["image"], b["image"])  # deterministic from the seed
    assert small["image"].shape == (5, 28, 28, 1) and small["labels"].shape == (5, 2)
    batch = next(data.batches(a, 4, seed=0))
    assert batch["image"].shape == (4, 36, 36, 1)


def test_celeba_from_mock_source(tmp_path, no_network):
    _looks_prepared(tmp_path, "celeb_a", "2.1.0")
    with tfds.testing.mock_data(num_examples=6):
        source = data.load_celeba("validation", data_dir=tmp_path, image_size=32)
        subset = data.load_celeba(
            "validation", data_dir=tmp_path, image_size=32, attributes=("Young", "Male")
        )
        example, pair = source[2], subset[2]
        batch = next(data.batches(source, 4, seed=0))
    assert len(source) == 6 and len(data.CELEBA_ATTRIBUTES) == 40
    assert example["image"].shape == (32, 32, 3) and example["image"].dtype == np.float32
    assert example["labels"].shape == (40,) and set(example["labels"].tolist()) <= {0, 1}
    young, male = data.CELEBA_ATTRIBUTES.index("Young"), data.CELEBA_ATTRIBUTES.index("Male")
    np.testing.assert_array_equal(pair["labels"], example["labels"][[young, male]])
    assert batch["image"].shape == (4, 32, 32, 3) and batch["labels"].shape == (4, 40)
    with pytest.raises(ValueError, match="unknown attributes"):
        data.load_celeba(attributes=("Smiling", "Happy"), data_dir=tmp_path)


def test_cifar10_corrupted_from_mock_source(tmp_path, no_network):
    _looks_prepared(tmp_path, "cifar10_corrupted/gaussian_noise_5", "1.0.0")
    with tfds.testing.mock_data(num_examples=7):
        out = data.load_cifar10_corrupted("gaussian_noise", 5, data_dir=tmp_path)
    assert out["image"].shape == (7, 32, 32, 3) and out["labels"].shape == (7, 1)
    assert len(data.CIFAR10_CORRUPTIONS) == 19
    with pytest.raises(ValueError, match="corruption"):
        data.load_cifar10_corrupted("rain", data_dir=tmp_path)
    with pytest.raises(ValueError, match="severity"):
        data.load_cifar10_corrupted("fog", 6, data_dir=tmp_path)


def _mtan_folder(root, fields, shape, sizes, seed=0):
    """A tiny copy of MTAN's preprocessed layout: <split>/<field>/<i>.npy."""
    rng = np.random.default_rng(seed)
    h, w = shape
    for split, n in sizes.items():
        for field, kind in fields.items():
            folder = root / split / field
            folder.mkdir(parents=True)
            for i in range(n):
                if kind == "image":
                    value = rng.integers(0, 256, (h, w, 3)) / 255.0
                elif kind == "label":
                    value = rng.integers(-1, 7, (h, w)).astype(np.float32)
                else:
                    value = rng.normal(size=(h, w, kind)).astype(np.float32)
                np.save(folder / f"{i}.npy", value)


def test_nyuv2_prepare_and_load(tmp_path, no_network):
    manual = tmp_path / "manual"
    fields = {"image": "image", "label": "label", "depth": 1, "normal": 3}
    _mtan_folder(manual, fields, (288, 384), {"train": 2, "val": 1})
    data_dir = tmp_path / "tfds"
    cli.main(["nyuv2", "--manual_dir", str(manual), "--data_dir", str(data_dir)])
    train = data.load_nyuv2("train", data_dir=data_dir)
    test = data.load_nyuv2("test", data_dir=data_dir)
    assert (len(train), len(test)) == (2, 1)
    example = train[1]
    assert example["image"].shape == (288, 384, 3) and example["image"].dtype == np.float32
    assert example["segmentation"].shape == (288, 384) and example["segmentation"].dtype == np.int32
    assert example["depth"].shape == (288, 384, 1) and example["normal"].shape == (288, 384, 3)
    np.testing.assert_allclose(example["image"], np.load(manual / "train/image/1.npy"), atol=1e-6)
    np.testing.assert_array_equal(example["segmentation"], np.load(manual / "train/label/1.npy"))
    np.testing.assert_array_equal(example["normal"], np.load(manual / "train/normal/1.npy"))
    batch = next(data.batches(train, 2, seed=0))
    assert batch["depth"].shape == (2, 288, 384, 1)
    assert data.NYUV2_TASKS == {"segmentation": 13, "depth": 1, "normal": 3}


def test_cityscapes_prepare_and_load(tmp_path, no_network):
    manual = tmp_path / "manual"
    _mtan_folder(
        manual,
        {"image": "image", "label_7": "label", "depth": 1},
        (128, 256),
        {"train": 2, "val": 2},
    )
    data_dir = tmp_path / "tfds"
    data.prepare_cityscapes(manual, num_classes=7, data_dir=data_dir)
    test = data.load_cityscapes("test", data_dir=data_dir)
    example = test[0]
    assert set(example) == {"image", "segmentation", "depth"}
    np.testing.assert_array_equal(example["segmentation"], np.load(manual / "val/label_7/0.npy"))
    np.testing.assert_array_equal(example["depth"], np.load(manual / "val/depth/0.npy"))
    with pytest.raises(data.DatasetNotFoundError, match="label_19"):
        data.prepare_cityscapes(manual, num_classes=19, data_dir=data_dir)  # no 19-class labels
    with pytest.raises(ValueError, match="num_classes"):
        data.load_cityscapes(num_classes=8, data_dir=data_dir)


def test_prepare_checks_the_manual_folder(tmp_path):
    with pytest.raises(data.DatasetNotFoundError, match="dropbox"):
        data.prepare_nyuv2(tmp_path / "empty", data_dir=tmp_path / "tfds")


def _mtlx_imports(package):
    for path in (REPO / "mtlx" / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            )
            yield from ((path.name, n) for n in names)


@pytest.mark.parametrize(
    "package, banned, allowed",
    [
        ("data", ("flax", "orbax", "tensorflow.", "mtlx."), ()),
        # models share the layer/path naming of the private core (tests/test_layout.py)
        ("models", ("orbax", "tensorflow_datasets", "grain", "mtlx."), ("mtlx._src",)),
    ],
)
def test_import_direction(package, banned, allowed):
    for filename, name in _mtlx_imports(package):
        if name.startswith((f"mtlx.{package}", *allowed)):
            continue
        assert not (name + ".").startswith(tuple(banned)) and name != "tensorflow", (filename, name)


def test_importing_mtlx_data_loads_no_heavy_package():
    code = (
        "import sys, mtlx.data; bad = [m for m in ('flax', 'orbax', 'tensorflow_datasets', "
        "'grain', 'tensorflow') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env={**os.environ})
