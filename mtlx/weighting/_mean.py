"""Mean: the average of the task gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from mtlx._src.weighting import Stats, Weighting, WeightingTransformation, as_transform


def mean() -> WeightingTransformation:
    r"""The mean of the task gradients, :math:`\frac{1}{T} \sum_t \nabla L_t`.

    The gradient of the mean loss; TorchJD's ``Mean`` aggregator. One backward pass with the
    engine's Jacobian.

    Static under ``optax.inject_hyperparams`` (``static_args``): none; every numeric argument
    may be injected.

    Properties: permutation-invariant, linear.
    """

    def weights(stats: Stats, state: optax.EmptyState) -> tuple[jax.Array, optax.EmptyState]:
        return jnp.full((stats.num_tasks,), 1.0 / stats.num_tasks), state

    return as_transform(Weighting("mean", weights, reads="nothing", task_specific="weighted"))
