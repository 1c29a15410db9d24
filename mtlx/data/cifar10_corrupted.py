"""CIFAR-10-C (Hendrycks & Dietterich, ICLR 2019): the CIFAR-10 test set under 19 corruptions at 5
severities, for measuring how features transfer to distribution shift.

Read from the TFDS ``cifar10_corrupted/<corruption>_<severity>`` configs (array_record format).
TFDS has only a test split (10,000 images); the registered dataset ``"cifar10_corrupted"``
splits it by seed into training and evaluation examples, one 10-class task ``"label"``.
"""

from __future__ import annotations

import os

import numpy as np

from mtlx.data import _tfds
from mtlx.data.registry import Dataset, TaskSpec, register_dataset

CORRUPTIONS = (
    "brightness",
    "contrast",
    "defocus_blur",
    "elastic",
    "fog",
    "frost",
    "frosted_glass_blur",
    "gaussian_blur",
    "gaussian_noise",
    "impulse_noise",
    "jpeg_compression",
    "motion_blur",
    "pixelate",
    "saturate",
    "shot_noise",
    "snow",
    "spatter",
    "speckle_noise",
    "zoom_blur",
)  # the TFDS config names
SEVERITIES = (1, 2, 3, 4, 5)


def load_cifar10_corrupted(
    corruption: str,
    severity: int = 5,
    *,
    data_dir: str | os.PathLike | None = None,
    num_examples: int | None = None,
) -> dict[str, np.ndarray]:
    """One corruption of the CIFAR-10 test set as NumPy arrays (TFDS has only a test split).

    Args:
      corruption: one of :data:`CORRUPTIONS`.
      severity: 1 (mild) to 5 (severe).
      data_dir: the TFDS data directory (default: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
      num_examples: keep the first examples only (default: all 10,000).

    Returns:
      ``{"image": float32 (N, 32, 32, 3) in [0, 1], "labels": int32 (N, 1)}`` (the CIFAR-10
      class as a single task).

    Raises:
      DatasetNotFoundError: the config is not prepared under ``data_dir``; nothing is downloaded.
    """
    _tfds.check_choice("corruption", corruption, CORRUPTIONS)
    _tfds.check_choice("severity", severity, SEVERITIES)
    data_dir = _tfds.resolve_data_dir(data_dir)
    source = _tfds.data_source(f"cifar10_corrupted/{corruption}_{severity}", "test", data_dir)
    n = len(source) if num_examples is None else min(int(num_examples), len(source))
    examples = [source[i] for i in range(n)]
    image = np.stack([np.asarray(e["image"]) for e in examples]).astype(np.float32) / 255.0
    labels = np.asarray([[int(e["label"])] for e in examples], np.int32).reshape(n, 1)
    return {"image": image, "labels": labels}


def cifar10_corrupted_tasks(**_: object) -> tuple[TaskSpec, ...]:
    """One task: the CIFAR-10 class (10 classes), column 0 of ``"labels"``."""
    return (TaskSpec("label", "classification", 10),)


@register_dataset("cifar10_corrupted", tasks=cifar10_corrupted_tasks)
def cifar10_corrupted_dataset(
    corruption: str = "gaussian_noise",
    severity: int = 5,
    data_dir: str | os.PathLike | None = None,
    num_examples: int | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Dataset:
    """CIFAR-10-C, one corruption, split by ``seed`` into training and evaluation examples.

    Args:
      corruption: one of :data:`CORRUPTIONS`.
      severity: 1 (mild) to 5 (severe).
      data_dir: the TFDS data directory.
      num_examples: use the first examples only (default: all 10,000).
      test_fraction: the share of examples held out for evaluation, in ``(0, 1)``.
      seed: seed of the split (the same seed gives the same split).

    Raises:
      DatasetNotFoundError: the config is not prepared under ``data_dir``; nothing is downloaded.
    """
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction}.")
    arrays = load_cifar10_corrupted(
        corruption, severity, data_dir=data_dir, num_examples=num_examples
    )
    n = len(arrays["labels"])
    order = np.random.default_rng(seed).permutation(n)
    num_test = min(max(int(round(float(test_fraction) * n)), 1), n - 1)
    test, train = np.sort(order[:num_test]), np.sort(order[num_test:])
    return Dataset(
        cifar10_corrupted_tasks(),
        {k: v[train] for k, v in arrays.items()},
        {k: v[test] for k, v in arrays.items()},
    )
