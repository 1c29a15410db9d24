"""Reading prepared TFDS datasets without TensorFlow, failing fast when they are missing.

``tfds.data_source`` reads ``array_record`` datasets with NumPy decoding (no TensorFlow). A
dataset that is not on disk must fail before TFDS is imported or any builder is called: a
builder on a machine without internet hangs for minutes in a download attempt, and TFDS's own
error for a missing dataset talks about file formats. :func:`require_prepared` checks the files
with ``os`` only and raises :class:`DatasetNotFoundError` with the commands that get the data.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

_TFDS_BUILD = (
    "Prepare it once in array_record format (building some TFDS datasets needs TensorFlow; "
    "reading them does not):\n"
    "  pip install tensorflow tensorflow-datasets array_record\n"
    "  tfds build {name} --file_format=array_record --data_dir={data_dir}\n"
)


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not prepared under ``data_dir``; the message says how to get it."""


def default_data_dir() -> str:
    """TFDS's default data directory: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``."""
    return os.environ.get(
        "TFDS_DATA_DIR", os.path.join(os.path.expanduser("~"), "tensorflow_datasets")
    )


def resolve_data_dir(data_dir: str | os.PathLike | None) -> str:
    return os.path.expanduser(os.fspath(data_dir)) if data_dir is not None else default_data_dir()


def require_prepared(name: str, data_dir: str, how_to: str | None = None) -> None:
    """Raises :class:`DatasetNotFoundError` unless ``data_dir/name`` holds an array_record build.

    Args:
      name: the TFDS name, with its config if any (``"cifar10_corrupted/fog_3"``).
      data_dir: the TFDS data directory.
      how_to: the instructions to get the data (default: the ``tfds build`` command).
    """
    how_to = how_to or _TFDS_BUILD.format(name=name, data_dir=data_dir)
    root = os.path.join(data_dir, *name.split("/"))
    infos = glob.glob(os.path.join(glob.escape(root), "*", "dataset_info.json"))
    if not infos:
        raise DatasetNotFoundError(f"{name!r} is not prepared in {data_dir!r}.\n{how_to}")
    versions = [os.path.dirname(info) for info in infos]
    if not any(glob.glob(os.path.join(glob.escape(v), "*.array_record*")) for v in versions):
        raise DatasetNotFoundError(
            f"{name!r} in {data_dir!r} is not in array_record format (TFRecord files need "
            f"TensorFlow to read).\n{how_to}"
        )


def data_source(name: str, split: str, data_dir: str, how_to: str | None = None) -> Any:
    """``tfds.data_source(name, split=split)`` after :func:`require_prepared`; never downloads."""
    require_prepared(name, data_dir, how_to)
    try:
        import tensorflow_datasets as tfds  # noqa: PLC0415 - optional, slow to import
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            'reading TFDS datasets needs tensorflow-datasets: pip install "mtlx[data]"'
        ) from e
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False)


class MappedSource:
    """A random-access source whose examples go through ``fn`` when read (decoding, resizing).

    Args:
      source: ``len(source)`` and ``source[i]``.
      fn: ``fn(example) -> example``.
    """

    def __init__(self, source: Any, fn: Callable[[Any], Mapping[str, Any]]):
        self._source = source
        self._fn = fn

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> Mapping[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} examples.")
        return self._fn(self._source[index % len(self)])


def check_choice(what: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ValueError(f"{what} must be one of {tuple(choices)}; got {value!r}.")
