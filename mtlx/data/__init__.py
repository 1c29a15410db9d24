"""Multi-task datasets as NumPy arrays: an offline default (Multi-Digits) and TFDS loaders."""

from mtlx.data.digits import NUM_CLASSES as DIGITS_NUM_CLASSES
from mtlx.data.digits import TASKS as DIGITS_TASKS
from mtlx.data.digits import load_multi_digits
