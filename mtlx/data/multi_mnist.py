"""Multi-MNIST, Multi-Fashion and Multi-Fashion+MNIST: two overlapping items, two tasks.

Sener & Koltun ("Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018) put one
28 x 28 image in the top-left corner of a 36 x 36 canvas and another in the bottom-right corner
(shifted by 6 pixels; the overlap keeps the brighter pixel), then resize to 28 x 28. The tasks
classify the top-left and the bottom-right item. Lin et al. ("Pareto Multi-Task Learning",
NeurIPS 2019) add Multi-Fashion (two Fashion-MNIST items) and Multi-Fashion+MNIST (a digit
top-left, a Fashion-MNIST item bottom-right).

The pairs are built deterministically from ``seed`` on each call (a few seconds for 60,000
pairs) from the TFDS ``mnist`` / ``fashion_mnist`` sources, read with ``tfds.data_source``:
prepare those once (see :func:`load_multi_mnist`'s error message).
"""

from __future__ import annotations

import os

import numpy as np

from mtlx.data import _tfds
from mtlx.data.registry import Dataset, TaskSpec, register_dataset

VARIANTS = {
    "mnist": ("mnist", "mnist"),  # Multi-MNIST
    "fashion": ("fashion_mnist", "fashion_mnist"),  # Multi-Fashion
    "fashion_mnist": ("mnist", "fashion_mnist"),  # Multi-Fashion+MNIST: digit left, item right
}
SPLITS = ("train", "test")
_CANVAS, _SHIFT, _SIDE = 36, 6, 28


def overlay(top_left: np.ndarray, bottom_right: np.ndarray, image_size: int = 36) -> np.ndarray:
    """Sener & Koltun's overlay of two batches of 28 x 28 images.

    Args:
      top_left: ``(N, 28, 28)`` or ``(N, 28, 28, 1)``, uint8 or float.
      bottom_right: the same shape.
      image_size: 36 (the canvas) or 28 (the canvas resized with nearest neighbours, as in the
        reference code).

    Returns:
      ``(N, image_size, image_size, 1)``, the dtype of the inputs.
    """
    a = np.asarray(top_left).reshape(-1, _SIDE, _SIDE)
    b = np.asarray(bottom_right).reshape(-1, _SIDE, _SIDE)
    if a.shape != b.shape:
        raise ValueError(f"the two image batches differ in shape: {a.shape} vs {b.shape}.")
    _tfds.check_choice("image_size", image_size, (28, 36))
    canvas = np.zeros((len(a), _CANVAS, _CANVAS), a.dtype)
    canvas[:, :_SIDE, :_SIDE] = a
    right = canvas[:, _SHIFT : _SHIFT + _SIDE, _SHIFT : _SHIFT + _SIDE]
    np.maximum(right, b, out=right)  # the overlap keeps the brighter pixel
    if image_size == _SIDE:
        # PIL's NEAREST resize samples source pixel floor((i + 0.5) * 36 / 28).
        index = np.floor((np.arange(_SIDE) + 0.5) * _CANVAS / _SIDE).astype(np.int64)
        canvas = canvas[:, index][:, :, index]
    return canvas[..., None]


def _read_all(name: str, split: str, data_dir: str) -> tuple[np.ndarray, np.ndarray]:
    source = _tfds.data_source(name, split, data_dir)
    examples = [source[i] for i in range(len(source))]
    images = np.stack([np.asarray(e["image"]) for e in examples]).reshape(-1, _SIDE, _SIDE)
    labels = np.asarray([int(e["label"]) for e in examples], np.int32)
    return images, labels


def load_multi_mnist(
    split: str = "train",
    *,
    variant: str = "mnist",
    data_dir: str | os.PathLike | None = None,
    image_size: int = 36,
    num_examples: int | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Multi-MNIST (or Multi-Fashion, Multi-Fashion+MNIST) as NumPy arrays.

    Each source image of the split is the top-left item of one pair; its partner is drawn
    uniformly from the split of the other source (Sener & Koltun's construction).

    Args:
      split: ``"train"`` (60,000 pairs) or ``"test"`` (10,000).
      variant: ``"mnist"`` (Multi-MNIST), ``"fashion"`` (Multi-Fashion) or ``"fashion_mnist"``
        (Multi-Fashion+MNIST).
      data_dir: the TFDS data directory holding ``mnist`` / ``fashion_mnist`` in array_record
        format (default: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
      image_size: 36 (the canvas) or 28 (resized as in the reference code).
      num_examples: keep the first pairs only (default: all).
      seed: the pairing seed (the same seed gives the same set).

    Returns:
      ``{"image": float32 (N, S, S, 1) in [0, 1], "labels": int32 (N, 2)}`` (top-left item,
      bottom-right item; 10 classes each).

    Raises:
      DatasetNotFoundError: a source is not prepared under ``data_dir`` (the message has the
        commands); nothing is downloaded.
    """
    _tfds.check_choice("split", split, SPLITS)
    _tfds.check_choice("variant", variant, tuple(VARIANTS))
    _tfds.check_choice("image_size", image_size, (28, 36))
    data_dir = _tfds.resolve_data_dir(data_dir)
    left_name, right_name = VARIANTS[variant]
    for name in dict.fromkeys((left_name, right_name)):
        _tfds.require_prepared(name, data_dir)  # both checked before reading either
    left_images, left_labels = _read_all(left_name, split, data_dir)
    if right_name == left_name:
        right_images, right_labels = left_images, left_labels
    else:
        right_images, right_labels = _read_all(right_name, split, data_dir)
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    partner = rng.integers(0, len(right_images), len(left_images))
    n = len(left_images) if num_examples is None else min(int(num_examples), len(left_images))
    partner = partner[:n]
    image = overlay(left_images[:n], right_images[partner], image_size)
    labels = np.stack([left_labels[:n], right_labels[partner]], axis=1).astype(np.int32)
    return {"image": image.astype(np.float32) / 255.0, "labels": labels}


def multi_mnist_tasks(**_: object) -> tuple[TaskSpec, ...]:
    """The two 10-class tasks of Multi-MNIST: the top-left and the bottom-right item."""
    return (TaskSpec("left", "classification", 10), TaskSpec("right", "classification", 10))


@register_dataset("multi_mnist", tasks=multi_mnist_tasks)
def multi_mnist_dataset(
    variant: str = "mnist",
    data_dir: str | os.PathLike | None = None,
    image_size: int = 36,
    num_train: int | None = None,
    num_test: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Multi-MNIST / Multi-Fashion / Multi-Fashion+MNIST (TFDS; see :func:`load_multi_mnist`)."""
    kwargs = {"variant": variant, "data_dir": data_dir, "image_size": image_size, "seed": seed}
    return Dataset(
        multi_mnist_tasks(),
        load_multi_mnist("train", num_examples=num_train, **kwargs),
        load_multi_mnist("test", num_examples=num_test, **kwargs),
    )
