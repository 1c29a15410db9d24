"""NYUv2 (Silberman et al., ECCV 2012) for multi-task dense prediction: 13-class semantic
segmentation, depth and surface normals on the standard 795 / 654 split, at 288 x 384, as
preprocessed by Liu et al. (MTAN, CVPR 2019) and used by LibMTL.

The data cannot be downloaded automatically: fetch MTAN's preprocessed set once, then write it
as an array_record TFDS dataset with :func:`prepare_nyuv2` (or ``python -m mtlx.data nyuv2
--manual_dir DIR``).
"""

from __future__ import annotations

import os
from typing import Any

from mtlx.data import _dense, _tfds
from mtlx.data.registry import Dataset, TaskSpec, register_dataset

NAME = "mtlx_nyuv2"
TASKS = {"segmentation": 13, "depth": 1, "normal": 3}  # output channels per task
SHAPE = (288, 384)
_FIELDS = {"image": "image", "segmentation": "label", "depth": "depth", "normal": "normal"}
_HOW_TO = (
    "NYUv2 must be downloaded by hand (no automatic download):\n"
    "  1. download MTAN's preprocessed NYUv2 from "
    "https://www.dropbox.com/sh/86nssgwm6hm3vkb/AACrnUQ4GxpdrBbLjb6n-mWNa?dl=0 and unzip it to "
    "MANUAL_DIR, which then holds train/ and val/ with image/, label/, depth/, normal/;\n"
    "  2. python -m mtlx.data nyuv2 --manual_dir MANUAL_DIR --data_dir {data_dir}\n"
)


def prepare_nyuv2(
    manual_dir: str | os.PathLike, *, data_dir: str | os.PathLike | None = None
) -> str:
    """Writes MTAN's preprocessed NYUv2 (``manual_dir/{train,val}/...``) as an array_record TFDS
    dataset in ``data_dir`` (default: TFDS's); returns the dataset's directory."""
    how_to = _HOW_TO.format(data_dir=_tfds.resolve_data_dir(data_dir))
    return _dense.prepare(NAME, manual_dir, data_dir, _FIELDS, TASKS, SHAPE, how_to)


def load_nyuv2(split: str = "train", *, data_dir: str | os.PathLike | None = None) -> Any:
    """NYUv2 as a random-access source for :func:`mtlx.data.batches`.

    Args:
      split: ``"train"`` (795 images) or ``"test"`` (654; MTAN's ``val``).
      data_dir: where :func:`prepare_nyuv2` wrote it (default: ``$TFDS_DATA_DIR`` or
        ``~/tensorflow_datasets``).

    Returns:
      A source of ``{"image": float32 (288, 384, 3) in [0, 1], "segmentation": int32 (288, 384)
      (13 classes, -1 where unlabelled), "depth": float32 (288, 384, 1), "normal": float32
      (288, 384, 3)}`` examples.

    Raises:
      DatasetNotFoundError: not prepared under ``data_dir`` (the message says how); nothing is
        downloaded.
    """
    return _dense.load(NAME, split, data_dir, _HOW_TO)


def nyuv2_tasks(**_: object) -> tuple[TaskSpec, ...]:
    """13-class segmentation, depth and surface normals, each under its own batch key."""
    return (
        TaskSpec("segmentation", "segmentation", TASKS["segmentation"]),
        TaskSpec("depth", "depth"),
        TaskSpec("normal", "normal"),
    )


@register_dataset("nyuv2", tasks=nyuv2_tasks)
def nyuv2_dataset(data_dir: str | os.PathLike | None = None) -> Dataset:
    """NYUv2 (MTAN's preprocessed set, prepared by :func:`prepare_nyuv2`; see :func:`load_nyuv2`)."""
    return Dataset(
        nyuv2_tasks(), load_nyuv2("train", data_dir=data_dir), load_nyuv2("test", data_dir=data_dir)
    )
