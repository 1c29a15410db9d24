"""Dense multi-task sets in MTAN's preprocessed layout (NYUv2, Cityscapes), as TFDS datasets.

Liu et al. (MTAN, CVPR 2019) distribute NYUv2 and Cityscapes as one ``.npy`` file per example and
field: ``<manual_dir>/{train,val}/<field>/<i>.npy``. :func:`prepare` writes such a directory as an
array_record TFDS dataset (TFDS's ad-hoc builder, no TensorFlow); :func:`load` reads it back with
``tfds.data_source``. Images are stored as uint8 (the MTAN floats are 8-bit images over 255),
labels as int8 (-1: no label), depth and normals as float32.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from mtlx.data import _tfds

VERSION = "1.0.0"
SPLITS = {"train": "train", "test": "val"}  # our split name -> MTAN's folder


def _indices(folder: str) -> list[int]:
    names = (os.path.basename(p) for p in glob.glob(os.path.join(glob.escape(folder), "*.npy")))
    return sorted(int(m.group(1)) for m in (re.fullmatch(r"(\d+)\.npy", n) for n in names) if m)


def check_manual_dir(manual_dir: str, fields: Mapping[str, str], how_to: str) -> None:
    """Raises :class:`DatasetNotFoundError` unless every split folder has every field's files."""
    for folder in SPLITS.values():
        counts = {f: len(_indices(os.path.join(manual_dir, folder, f))) for f in fields.values()}
        if not all(counts.values()) or len(set(counts.values())) != 1:
            raise _tfds.DatasetNotFoundError(
                f"{manual_dir!r} does not hold MTAN's layout {folder}/<field>/<i>.npy for the "
                f"fields {tuple(fields.values())} (files found per field: {counts}).\n{how_to}"
            )


def _examples(
    manual_dir: str, folder: str, fields: Mapping[str, str], shape: tuple[int, int]
) -> Iterator[dict[str, np.ndarray]]:
    root = os.path.join(manual_dir, folder)
    for i in _indices(os.path.join(root, "image")):
        raw = {key: np.load(os.path.join(root, f, f"{i}.npy")) for key, f in fields.items()}
        example = {}
        for key, value in raw.items():
            value = np.asarray(value)
            if key == "image":
                value = np.clip(np.rint(value * 255.0), 0, 255).astype(np.uint8)
            elif key == "segmentation":
                value = value.reshape(shape).astype(np.int8)
            else:
                value = value.reshape(*shape, -1).astype(np.float32)
            example[key] = value
        yield example


def prepare(
    name: str,
    manual_dir: str | os.PathLike,
    data_dir: str | os.PathLike | None,
    fields: Mapping[str, str],
    channels: Mapping[str, int],
    shape: tuple[int, int],
    how_to: str,
) -> str:
    """Writes MTAN's ``manual_dir`` as the array_record TFDS dataset ``name``; returns its path."""
    manual_dir = os.path.expanduser(os.fspath(manual_dir))
    check_manual_dir(manual_dir, fields, how_to)
    data_dir = _tfds.resolve_data_dir(data_dir)
    import tensorflow_datasets as tfds  # noqa: PLC0415 - optional, slow to import

    h, w = shape
    spec = {}
    for key in fields:
        if key == "image":
            spec[key] = tfds.features.Tensor(shape=(h, w, 3), dtype=np.uint8)
        elif key == "segmentation":
            spec[key] = tfds.features.Tensor(shape=(h, w), dtype=np.int8)
        else:
            spec[key] = tfds.features.Tensor(shape=(h, w, channels[key]), dtype=np.float32)
    features = tfds.features.FeaturesDict(spec)

    class Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        # Not registered: the reader finds the prepared files by name (tfds.data_source falls
        # back to the dataset_info.json on disk), so no class has to exist at read time.
        VERSION = tfds.core.Version(VERSION)

        def _info(self) -> Any:
            return tfds.core.DatasetInfo(builder=self, features=features, disable_shuffling=True)

        def _split_generators(self, dl_manager: Any) -> dict[str, Any]:
            del dl_manager  # the files are in manual_dir already
            return {split: self._generate_examples(folder) for split, folder in SPLITS.items()}

        def _generate_examples(self, folder: str) -> Iterator[tuple[int, dict[str, Any]]]:
            yield from enumerate(_examples(manual_dir, folder, fields, shape))

    Builder.name = name  # the TFDS name, instead of one derived from the class name
    builder = Builder(data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare()
    return os.fspath(builder.data_path)


def load(name: str, split: str, data_dir: str | os.PathLike | None, how_to: str) -> Any:
    """The prepared dataset ``name`` as a source of float32 images, int32 labels, float maps."""
    _tfds.check_choice("split", split, tuple(SPLITS))
    data_dir = _tfds.resolve_data_dir(data_dir)
    source = _tfds.data_source(name, split, data_dir, how_to.format(data_dir=data_dir))

    def convert(example: Mapping[str, Any]) -> dict[str, np.ndarray]:
        out = {}
        for key, value in example.items():
            value = np.asarray(value)
            if key == "image":
                out[key] = value.astype(np.float32) / 255.0
            elif key == "segmentation":
                out[key] = value.astype(np.int32)
            else:
                out[key] = value.astype(np.float32)
        return out

    return _tfds.MappedSource(source, convert)
