"""A multi-layer perceptron with hard parameter sharing (the smallest model for any task set)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from mtlx.models._hps import MultiTaskModel, TaskHeads


class MLP(nnx.Module):
    """Flatten, then ``Linear -> ReLU`` for each hidden width (the identity after flattening if
    ``hidden`` is empty).

    Args:
      in_features: the flattened input size.
      hidden: the hidden widths.
      rngs: the random streams.
    """

    def __init__(self, in_features: int, hidden: Sequence[int] = (64, 64), *, rngs: nnx.Rngs):
        widths = (int(in_features), *map(int, hidden))
        if min(widths) < 1:
            raise ValueError(f"in_features and hidden widths must be positive; got {widths}.")
        self.in_features = widths[0]
        self.out_features = widths[-1]
        self.layers = nnx.List(
            [nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jnp.reshape(x, (x.shape[0], -1))
        if x.shape[1] != self.in_features:
            raise ValueError(
                f"MLP expects {self.in_features} features per example after flattening; "
                f"got input of shape {x.shape}."
            )
        for layer in self.layers:
            x = nnx.relu(layer(x))
        return x


def mlp_hps(
    in_features: int,
    hidden: Sequence[int] = (64, 64),
    num_tasks: int = 2,
    out_features: int | Sequence[int] = 10,
    *,
    rngs: nnx.Rngs,
) -> MultiTaskModel:
    """An MLP trunk shared by ``num_tasks`` linear heads.

    ``model(x)`` flattens ``x`` (``(N, ...)`` with ``prod(...) == in_features``) and returns a
    tuple of ``num_tasks`` arrays ``(N, out_features)`` (logits).

    Args:
      in_features: the flattened input size.
      hidden: the widths of the shared ReLU layers.
      num_tasks: T.
      out_features: each head's output size, or one size per task (e.g. ``(10, 10, 1)`` for two
        classifiers and a regression; the stacked heads are as wide as the largest).
      rngs: the random streams (``nnx.Rngs(seed)``).

    Returns:
      A :class:`MultiTaskModel`; head parameters are stacked ``(T, ...)`` under ``heads``.
    """
    encoder = MLP(in_features, hidden, rngs=rngs)
    width = encoder.out_features
    heads = TaskHeads.sized(
        lambda size, r: nnx.Linear(width, size, rngs=r), out_features, num_tasks, rngs=rngs
    )
    return MultiTaskModel(encoder, heads)
