"""Cityscapes (Cordts et al., CVPR 2016) for multi-task dense prediction: semantic segmentation
(7 or 19 classes) and (inverse) depth at 128 x 256, as preprocessed by Liu et al. (MTAN, CVPR
2019) and used by LibMTL (2,975 train / 500 test images).

The data cannot be downloaded automatically (Cityscapes needs a registration): fetch MTAN's
preprocessed set once, then write it as an array_record TFDS dataset with
:func:`prepare_cityscapes` (or ``python -m mtlx.data cityscapes --manual_dir DIR``).
"""

from __future__ import annotations

import os
from typing import Any

from mtlx.data import _dense, _tfds
from mtlx.data.registry import Dataset, TaskSpec, register_dataset

NAME = "mtlx_cityscapes"
SHAPE = (128, 256)
NUM_CLASSES = (7, 19)
_HOW_TO = (
    "Cityscapes must be downloaded by hand (it needs a registration at cityscapes-dataset.com):\n"
    "  1. download MTAN's preprocessed 128 x 256 Cityscapes from "
    "https://www.dropbox.com/sh/gaw6vh6qusoyms6/AADwWi0Tp3E3M4B2xzeGlsEna?dl=0 and unzip it to "
    "MANUAL_DIR, which then holds train/ and val/ with image/, label_7/, label_19/, depth/;\n"
    "  2. python -m mtlx.data cityscapes --manual_dir MANUAL_DIR --num_classes {num_classes} "
    "--data_dir {data_dir}\n"
)


def _name(num_classes: int) -> str:
    if num_classes not in NUM_CLASSES:
        raise ValueError(f"num_classes must be one of {NUM_CLASSES}; got {num_classes!r}.")
    return f"{NAME}{num_classes}"


def prepare_cityscapes(
    manual_dir: str | os.PathLike,
    *,
    num_classes: int = 7,
    data_dir: str | os.PathLike | None = None,
) -> str:
    """Writes MTAN's preprocessed Cityscapes (``manual_dir/{train,val}/...``) with its
    ``num_classes``-class labels as an array_record TFDS dataset; returns its directory."""
    name = _name(num_classes)
    fields = {"image": "image", "segmentation": f"label_{num_classes}", "depth": "depth"}
    how_to = _HOW_TO.format(num_classes=num_classes, data_dir=_tfds.resolve_data_dir(data_dir))
    channels = {"segmentation": num_classes, "depth": 1}
    return _dense.prepare(name, manual_dir, data_dir, fields, channels, SHAPE, how_to)


def load_cityscapes(
    split: str = "train",
    *,
    num_classes: int = 7,
    data_dir: str | os.PathLike | None = None,
) -> Any:
    """Cityscapes as a random-access source for :func:`mtlx.data.batches`.

    Args:
      split: ``"train"`` (2,975 images) or ``"test"`` (500; MTAN's ``val``).
      num_classes: 7 (LibMTL, MTAN) or 19 segmentation classes.
      data_dir: where :func:`prepare_cityscapes` wrote it (default: ``$TFDS_DATA_DIR`` or
        ``~/tensorflow_datasets``).

    Returns:
      A source of ``{"image": float32 (128, 256, 3) in [0, 1], "segmentation": int32 (128, 256)
      (-1 where unlabelled), "depth": float32 (128, 256, 1)}`` examples.

    Raises:
      DatasetNotFoundError: not prepared under ``data_dir`` (the message says how); nothing is
        downloaded.
    """
    how_to = _HOW_TO.replace("{num_classes}", str(num_classes))
    return _dense.load(_name(num_classes), split, data_dir, how_to)


def cityscapes_tasks(num_classes: int = 7, **_: object) -> tuple[TaskSpec, ...]:
    """Segmentation with ``num_classes`` classes and depth, each under its own batch key."""
    _name(int(num_classes))  # validates
    return (TaskSpec("segmentation", "segmentation", int(num_classes)), TaskSpec("depth", "depth"))


@register_dataset("cityscapes", tasks=cityscapes_tasks)
def cityscapes_dataset(num_classes: int = 7, data_dir: str | os.PathLike | None = None) -> Dataset:
    """Cityscapes (MTAN's set, prepared by :func:`prepare_cityscapes`; see :func:`load_cityscapes`)."""
    kwargs = {"num_classes": num_classes, "data_dir": data_dir}
    return Dataset(
        cityscapes_tasks(num_classes),
        load_cityscapes("train", **kwargs),
        load_cityscapes("test", **kwargs),
    )
