"""Multi-Digits: an offline two-digit multi-task set built from real handwritten digits.

scikit-learn ships the UCI handwritten digits (1,797 images, 8 x 8, 16 grey levels) inside its
package, so this set needs no download: it is the default data of the CLI, the tests and the
examples. Like Multi-MNIST, each example puts two digits side by side (an 8 x 16 image) and the
tasks classify the left and the right digit (10 classes each); optional extra tasks are the parity
of their sum and whether the left digit is the larger (classification), and ``"sum"``, the sum of
the two digits (0-18) as a **regression** target (L1 loss, MAE): a task of another type and loss
scale than the digit classifiers, for studies that need heterogeneous tasks (e.g. the gradient
magnitudes of Elich et al., "Challenging Common Paradigms in Multi-Task Learning", 2024).

The split is by source image: test examples are built from digits never seen in training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mtlx.data.registry import Dataset, TaskSpec, register_dataset

TASKS = ("left", "right", "sum_parity", "left_greater", "sum")
# Classes of the classification tasks; "sum" is a regression task (one output).
NUM_CLASSES = {"left": 10, "right": 10, "sum_parity": 2, "left_greater": 2}
REGRESSION_TASKS = ("sum",)
_TEST_FRACTION = 0.25


def _source_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            'Multi-Digits needs scikit-learn, which ships the digits: pip install "mtlx[data]"'
        ) from e
    digits = load_digits()
    return digits.images.astype(np.float32) / 16.0, digits.target.astype(np.int32)


def load_multi_digits(
    split: str = "train",
    *,
    tasks: Sequence[str] = ("left", "right"),
    num_examples: int | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """The Multi-Digits split as NumPy arrays.

    Args:
      split: ``"train"`` or ``"test"``.
      tasks: task names from :data:`TASKS`, in the order of the label columns.
      num_examples: pairs to build; default: as many as source images in the split.
      seed: seed of the train/test partition and the pairing (the same seed gives the same set).

    Returns:
      ``{"image": float32 (N, 8, 16, 1) in [0, 1], "labels": int32 (N, T)}``, one label column
      per task in ``tasks`` order; with the regression task ``"sum"`` also ``"sum": float32
      (N,)`` (the trainer reads a task's own key before the label block, so ``"sum"`` is
      regressed on the float target; its integer column keeps the other tasks' column indices).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}.")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"unknown tasks {unknown}; choose from {TASKS}.")
    images, targets = _source_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    num_test = int(round(_TEST_FRACTION * len(images)))
    index = order[:num_test] if split == "test" else order[num_test:]
    n = len(index) if num_examples is None else int(num_examples)
    pair_rng = np.random.default_rng([seed, 1 if split == "test" else 0])
    left = index[pair_rng.integers(0, len(index), n)]
    right = index[pair_rng.integers(0, len(index), n)]
    image = np.concatenate([images[left], images[right]], axis=2)[..., None]
    digit_left, digit_right = targets[left], targets[right]
    columns = {
        "left": digit_left,
        "right": digit_right,
        "sum_parity": (digit_left + digit_right) % 2,
        "left_greater": (digit_left > digit_right).astype(np.int32),
        "sum": digit_left + digit_right,
    }
    labels = np.stack([columns[t] for t in tasks], axis=1).astype(np.int32)
    out = {"image": image.astype(np.float32), "labels": labels}
    for t in REGRESSION_TASKS:
        if t in tasks:
            out[t] = columns[t].astype(np.float32)
    return out


def digits_tasks(tasks: Sequence[str] = ("left", "right"), **_: object) -> tuple[TaskSpec, ...]:
    """The tasks of Multi-Digits with ``tasks``, in label-column order (``"sum"``: regression)."""
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"unknown tasks {unknown}; choose from {TASKS}.")
    return tuple(
        TaskSpec(t, "regression")
        if t in REGRESSION_TASKS
        else TaskSpec(t, "classification", NUM_CLASSES[t])
        for t in tasks
    )


@register_dataset("digits", tasks=digits_tasks)
def digits_dataset(
    tasks: Sequence[str] = ("left", "right"),
    num_train: int | None = None,
    num_test: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Multi-Digits (offline, 8 x 16 images, 1-5 tasks, digit classes and their sum): the default.

    Args:
      tasks: task names from :data:`TASKS` (``"sum"`` is a regression task with one output: use a
        model whose heads may differ in size, e.g. :class:`mtlx.models.PerTaskHeads`).
      num_train: training pairs (default: one per training source image, 1,348).
      num_test: test pairs (default: one per test source image, 449).
      seed: seed of the partition and the pairing.
    """
    tasks = tuple(tasks)
    load = lambda split, n: load_multi_digits(split, tasks=tasks, num_examples=n, seed=seed)  # noqa: E731
    return Dataset(digits_tasks(tasks), load("train", num_train), load("test", num_test))
