"""Names of parameter leaves and layers, from ``jax.tree_util`` key paths: one definition for all.

A **layer** is the parent of its parameter leaves: the leaf's path keys without the last one,
joined with ``"/"`` (``"encoder/conv1"`` holds ``kernel`` and ``bias``). A leaf at the root is a
layer by itself, named by its key; a bare array is the layer ``"params"``. The trailing ``.value``
of a Flax NNX ``Variable`` is not part of the name, so a ``nnx.State`` and the plain dict of its
arrays have the same layers. The conflict statistics, Recon's layer split, GradVac's per-layer
granularity and the models' shared/task-specific predicate all read names from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax

PyTree = Any

# Keys that wrap a parameter's value rather than name it (flax NNX Variables flatten to `.value`).
VALUE_KEYS = ("value", "raw_value")


def key_name(entry: Any) -> str:
    """The name of one path entry: a dict key, an attribute, a sequence index, or the entry itself."""
    if isinstance(entry, jax.tree_util.DictKey):
        return str(entry.key)
    if isinstance(entry, jax.tree_util.GetAttrKey):
        return str(entry.name)
    if isinstance(entry, jax.tree_util.SequenceKey):
        return str(entry.idx)
    if isinstance(entry, jax.tree_util.FlattenedIndexKey):
        return str(entry.key)
    return str(entry)


def path_names(path: Sequence[Any]) -> list[str]:
    """The names along ``path`` without a trailing Variable-value key (``.value``)."""
    names = [key_name(k) for k in path]
    while (
        len(names) > 1
        and isinstance(path[len(names) - 1], jax.tree_util.GetAttrKey)
        and names[-1] in VALUE_KEYS
    ):
        names.pop()
    return names


def layer_of_path(path: Sequence[Any]) -> str:
    """The layer name of a leaf from its ``jax.tree_util`` key path (see the module docstring)."""
    names = path_names(path)
    if not names:
        return "params"
    if len(names) == 1:
        return names[0]
    return "/".join(names[:-1])


def leaf_layers(tree: PyTree) -> tuple[str, ...]:
    """One layer name per leaf of ``tree``, in ``jax.tree.leaves`` order."""
    return tuple(layer_of_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0])


def layer_names(tree: PyTree) -> tuple[str, ...]:
    """The layers of ``tree`` in order of first appearance among its leaves."""
    return tuple(dict.fromkeys(leaf_layers(tree)))


def layer_ids(tree: PyTree) -> tuple[list[int], int]:
    """The layer index of every leaf (layers numbered in order of first appearance), and their number."""
    names = layer_names(tree)
    index = {name: i for i, name in enumerate(names)}
    return [index[name] for name in leaf_layers(tree)], len(names)
