"""Yeast: a multi-label gene-function benchmark (Elisseeff & Weston, NeurIPS 2001), 14 tasks.

2,417 yeast genes, each described by 103 numeric features (micro-array expression and
phylogenetic profiles) and annotated with a subset of 14 functional classes: 14 binary
classification tasks. The MULAN version of the data ships inside the ``river`` wheel
(``river/datasets/yeast.csv.gz``; ``pip install "mtlx[yeast]"``), so it is read from disk, never
downloaded. The file is located without importing river.

The split is a seeded permutation into 1,500 training and 917 test genes (the sizes of MULAN's
standard split, which river does not ship); features are standardised with the training split's
mean and standard deviation.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os

import numpy as np

from mtlx.data.registry import Dataset, TaskSpec, register_dataset

NUM_EXAMPLES = 2417
NUM_FEATURES = 103
NUM_TRAIN = 1500  # MULAN's standard split: 1,500 train / 917 test
TASKS = tuple(f"label_{i}" for i in range(1, 15))  # the CSV's Class1 ... Class14
_FILE = ("datasets", "yeast.csv.gz")
_INSTALL = (
    "the Yeast data ships inside the river package, which is not installed: "
    'pip install "mtlx[yeast]" (or pip install river).'
)


def yeast_path() -> str:
    """The path of ``yeast.csv.gz`` inside the installed river package.

    Raises:
      ImportError: river is not installed (the message says ``pip install "mtlx[yeast]"``).
      FileNotFoundError: this river version does not ship the file.
    """
    spec = importlib.util.find_spec("river")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(_INSTALL)
    for root in spec.submodule_search_locations:
        path = os.path.join(root, *_FILE)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"river is installed ({list(spec.submodule_search_locations)}) but has no "
        f'{"/".join(_FILE)}; install a river that ships it: pip install "river>=0.26".'
    )


@functools.lru_cache(maxsize=2)
def _read(path: str) -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        header = f.readline().strip().split(",")
        values = np.loadtxt(f, delimiter=",", dtype=np.float64, ndmin=2)
    features = [i for i, h in enumerate(header) if h.startswith("Att")]
    labels = [i for i, h in enumerate(header) if h.startswith("Class")]
    if len(features) != NUM_FEATURES or len(labels) != len(TASKS):
        raise ValueError(
            f"{path}: expected {NUM_FEATURES} Att* and {len(TASKS)} Class* columns; got "
            f"{len(features)} and {len(labels)}."
        )
    x = values[:, features]
    y = values[:, labels]
    x.flags.writeable = y.flags.writeable = False  # cached: callers get copies
    return x, y


def load_yeast(
    split: str = "train",
    *,
    seed: int = 0,
    num_train: int = NUM_TRAIN,
    standardize: bool = True,
) -> dict[str, np.ndarray]:
    """One split of Yeast as NumPy arrays.

    Args:
      split: ``"train"`` or ``"test"``.
      seed: seed of the train/test permutation (the same seed gives the same split).
      num_train: training genes (default 1,500, MULAN's split size); the rest are test genes.
      standardize: subtract the training mean and divide by the training standard deviation.

    Returns:
      ``{"image": float32 (N, 103), "labels": int32 (N, 14)}`` (the model's input keeps the
      trainer's default key ``"image"``; label column t is task ``label_{t+1}``, 1 when the gene
      has the class).

    Raises:
      ImportError: river is not installed (``pip install "mtlx[yeast]"``).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}.")
    if not 0 < int(num_train) < NUM_EXAMPLES:
        raise ValueError(f"num_train must be in [1, {NUM_EXAMPLES - 1}]; got {num_train}.")
    x, y = _read(yeast_path())
    order = np.random.default_rng(seed).permutation(len(x))
    train, test = order[: int(num_train)], order[int(num_train) :]
    index = train if split == "train" else test
    features = x[index]
    if standardize:
        mean, std = x[train].mean(axis=0), x[train].std(axis=0)
        features = (features - mean) / np.where(std > 0, std, 1.0)
    return {"image": features.astype(np.float32), "labels": y[index].astype(np.int32)}


def yeast_tasks(**_: object) -> tuple[TaskSpec, ...]:
    """14 binary classification tasks ``label_1`` ... ``label_14``."""
    return tuple(TaskSpec(t, "classification", 2) for t in TASKS)


@register_dataset("yeast", tasks=yeast_tasks)
def yeast_dataset(seed: int = 0, num_train: int = NUM_TRAIN, standardize: bool = True) -> Dataset:
    """Yeast (river's bundled CSV): 103 features, 14 binary tasks; see :func:`load_yeast`."""
    kwargs = {"seed": seed, "num_train": num_train, "standardize": standardize}
    return Dataset(yeast_tasks(), load_yeast("train", **kwargs), load_yeast("test", **kwargs))
