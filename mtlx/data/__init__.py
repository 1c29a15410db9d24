"""Multi-task datasets as NumPy arrays: an offline default (Multi-Digits) and TFDS loaders.

Every loader returns a *source* (a dict of arrays, or a random-access sequence of example dicts
for the large image sets) and :func:`batches` turns any source into a seeded, resumable stream of
NumPy batches (see :mod:`mtlx.data.pipeline`). Each loader module also registers its dataset
by name (:func:`register_dataset`, beside the loader): :func:`load_dataset` returns a
:class:`Dataset` (tasks, a training and an evaluation source) for the trainer. TFDS datasets are read with ``tfds.data_source``
from array_record files, without TensorFlow; a loader whose data is missing raises
:class:`DatasetNotFoundError` at once, saying how to get the data, and never downloads.

This package imports NumPy only at import time (grain, tensorflow-datasets and pillow when a
loader or the pipeline runs); never flax, orbax or other mtlx packages.
"""

from mtlx.data._tfds import DatasetNotFoundError, default_data_dir
from mtlx.data.celeba import ATTRIBUTES as CELEBA_ATTRIBUTES
from mtlx.data.celeba import load_celeba
from mtlx.data.cifar10_corrupted import CORRUPTIONS as CIFAR10_CORRUPTIONS
from mtlx.data.cifar10_corrupted import load_cifar10_corrupted
from mtlx.data.cityscapes import load_cityscapes, prepare_cityscapes
from mtlx.data.corruptions import CORRUPTIONS as IMAGE_CORRUPTIONS
from mtlx.data.corruptions import corrupt, corrupt_images
from mtlx.data.digits import NUM_CLASSES as DIGITS_NUM_CLASSES
from mtlx.data.digits import TASKS as DIGITS_TASKS
from mtlx.data.digits import load_multi_digits
from mtlx.data.multi_mnist import load_multi_mnist
from mtlx.data.nyuv2 import TASKS as NYUV2_TASKS
from mtlx.data.nyuv2 import load_nyuv2, prepare_nyuv2
from mtlx.data.pipeline import Batches, batches
from mtlx.data.registry import (
    Dataset,
    DatasetEntry,
    TaskSpec,
    dataset_names,
    dataset_tasks,
    get_dataset,
    load_dataset,
    register_dataset,
)
from mtlx.data.yeast import TASKS as YEAST_TASKS
from mtlx.data.yeast import load_yeast

__all__ = [
    "CELEBA_ATTRIBUTES",
    "CIFAR10_CORRUPTIONS",
    "DIGITS_NUM_CLASSES",
    "DIGITS_TASKS",
    "IMAGE_CORRUPTIONS",
    "NYUV2_TASKS",
    "YEAST_TASKS",
    "Batches",
    "Dataset",
    "DatasetEntry",
    "DatasetNotFoundError",
    "TaskSpec",
    "batches",
    "corrupt",
    "corrupt_images",
    "dataset_names",
    "dataset_tasks",
    "default_data_dir",
    "get_dataset",
    "load_celeba",
    "load_cifar10_corrupted",
    "load_cityscapes",
    "load_dataset",
    "load_multi_digits",
    "load_multi_mnist",
    "load_nyuv2",
    "load_yeast",
    "prepare_cityscapes",
    "prepare_nyuv2",
    "register_dataset",
]
