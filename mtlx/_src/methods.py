"""Building blocks the weighting methods share beyond the core (``mtlx._src.weighting``).

Loss scalarizations (weights read from the losses, heads weighted too), stateless weightings with a
preference vector, and the dtype of the arrays their states keep.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from mtlx._src.weighting import (
    Reads,
    Stats,
    Weighting,
    WeightingTransformation,
    WeightsFn,
    as_pref_vector,
    as_transform,
    check_pref_vector,
    empty_init,
)

PreferenceWeightsFn = Callable[[Stats, jax.Array | None], jax.Array]


def state_dtype() -> Any:
    """The float dtype of the weights a state keeps: float32, or float64 under ``jax_enable_x64``."""
    return jnp.promote_types(jnp.float32, jnp.result_type(float))


def uniform_weights(num_tasks: int) -> jax.Array:
    """``(T,)`` weights ``1/T`` in :func:`state_dtype`: the start of the methods on the simplex."""
    return jnp.full((num_tasks,), 1.0 / num_tasks, state_dtype())


def loss_scalarization(
    name: str,
    weights: WeightsFn,
    *,
    init: Callable[[Any], Any] = empty_init,
    num_tasks: int | None = None,
) -> WeightingTransformation:
    """The transform of a loss scalarization: the gradient of ``sum_t w_t L_t`` (ONE backward pass).

    ``weights(stats, state)`` reads ``stats.losses`` (required); heads are weighted too, as
    backpropagating ``sum_t w_t L_t`` does.
    """
    return as_transform(
        Weighting(
            name,
            weights,
            init=init,
            reads="losses",
            needs_losses=True,
            task_specific="weighted",
            num_tasks=num_tasks,
        )
    )


def preference_weighting(
    name: str,
    weights_of: PreferenceWeightsFn,
    pref_vector: jax.typing.ArrayLike | None,
    *,
    reads: Reads = "gramian",
) -> WeightingTransformation:
    """The transform of the stateless ``w = weights_of(stats, pref)``, ``pref`` the preference vector.

    The preference is checked when the method is built (a vector) and at the first update (one entry
    per task). ``reads="gramian"``: an aggregation of the rows (heads get their own task's
    gradient); ``reads="losses"``: a :func:`loss_scalarization`.
    """
    pref = as_pref_vector(pref_vector)

    def weights(stats: Stats, state: optax.EmptyState) -> tuple[jax.Array, optax.EmptyState]:
        check_pref_vector(pref, stats.num_tasks)
        return weights_of(stats, pref), state

    if reads == "losses":
        return loss_scalarization(name, weights)
    return as_transform(Weighting(name, weights, reads=reads))
