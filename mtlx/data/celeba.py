"""CelebA: 40 binary face attributes, one task each (Sener & Koltun, NeurIPS 2018).

Read from the TFDS ``celeb_a`` dataset (array_record format, ``tfds.data_source``): examples are
decoded and resized on access, so the 200k images never sit in memory.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from mtlx.data import _tfds
from mtlx.data.registry import Dataset, TaskSpec, register_dataset

ATTRIBUTES = (
    "5_o_Clock_Shadow",
    "Arched_Eyebrows",
    "Attractive",
    "Bags_Under_Eyes",
    "Bald",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Blurry",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Chubby",
    "Double_Chin",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Heavy_Makeup",
    "High_Cheekbones",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Oval_Face",
    "Pale_Skin",
    "Pointy_Nose",
    "Receding_Hairline",
    "Rosy_Cheeks",
    "Sideburns",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Earrings",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Wearing_Necklace",
    "Wearing_Necktie",
    "Young",
)  # the order of list_attr_celeba.txt
SPLITS = ("train", "validation", "test")

_HOW_TO = (
    "CelebA is not in {data_dir!r} (array_record format). Prepare it once; the TFDS download "
    "comes from Google Drive, which often refuses automated downloads, so you may have to "
    "fetch img_align_celeba.zip, list_eval_partition.txt, list_attr_celeba.txt and "
    "list_landmarks_align_celeba.txt from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html "
    "into {data_dir}/downloads/manual first:\n"
    "  pip install tensorflow tensorflow-datasets array_record\n"
    "  tfds build celeb_a --file_format=array_record --data_dir={data_dir}\n"
)


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """A uint8 ``(H, W, C)`` image resized to ``(size, size, C)`` (PIL bilinear)."""
    from PIL import Image  # noqa: PLC0415 - pillow comes with tensorflow-datasets

    image = np.asarray(image)
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def load_celeba(
    split: str = "train",
    *,
    data_dir: str | os.PathLike | None = None,
    image_size: int = 64,
    attributes: tuple[str, ...] = ATTRIBUTES,
) -> _tfds.MappedSource:
    """CelebA as a random-access source for :func:`mtlx.data.batches`.

    Args:
      split: ``"train"`` (162,770), ``"validation"`` (19,867) or ``"test"`` (19,962).
      data_dir: the TFDS data directory (default: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
      image_size: the side the aligned 218 x 178 faces are resized to (64 in Sener & Koltun).
      attributes: the tasks, a subset of :data:`ATTRIBUTES` in the order of the label columns.

    Returns:
      A source of ``{"image": float32 (S, S, 3) in [0, 1], "labels": int32 (A,)}`` examples
      (1 when the attribute is present).

    Raises:
      DatasetNotFoundError: CelebA is not prepared under ``data_dir``; nothing is downloaded.
    """
    _tfds.check_choice("split", split, SPLITS)
    unknown = [a for a in attributes if a not in ATTRIBUTES]
    if unknown or not attributes:
        raise ValueError(f"unknown attributes {unknown}; choose from mtlx.data.CELEBA_ATTRIBUTES.")
    if int(image_size) < 1:
        raise ValueError(f"image_size must be positive; got {image_size}.")
    data_dir = _tfds.resolve_data_dir(data_dir)
    source = _tfds.data_source("celeb_a", split, data_dir, _HOW_TO.format(data_dir=data_dir))
    attributes, size = tuple(attributes), int(image_size)

    def convert(example: dict[str, Any]) -> dict[str, np.ndarray]:
        image = resize_image(example["image"], size).astype(np.float32) / 255.0
        labels = np.asarray([bool(example["attributes"][a]) for a in attributes], np.int32)
        return {"image": image, "labels": labels}

    return _tfds.MappedSource(source, convert)


def celeba_tasks(attributes: tuple[str, ...] = ATTRIBUTES, **_: object) -> tuple[TaskSpec, ...]:
    """One binary classification task per attribute, in label-column order."""
    return tuple(TaskSpec(a, "classification", 2) for a in attributes)


@register_dataset("celeba", tasks=celeba_tasks)
def celeba_dataset(
    data_dir: str | os.PathLike | None = None,
    image_size: int = 64,
    attributes: tuple[str, ...] = ATTRIBUTES,
    eval_split: str = "test",
) -> Dataset:
    """CelebA, 40 binary attributes (TFDS ``celeb_a``; see :func:`load_celeba`).

    Args:
      data_dir: the TFDS data directory.
      image_size: the side the faces are resized to.
      attributes: the tasks.
      eval_split: the evaluation split, ``"test"`` or ``"validation"``.
    """
    kwargs = {"data_dir": data_dir, "image_size": image_size, "attributes": tuple(attributes)}
    return Dataset(
        celeba_tasks(tuple(attributes)),
        load_celeba("train", **kwargs),
        load_celeba(eval_split, **kwargs),
    )
