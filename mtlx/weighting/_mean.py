"""Mean: the average of the task gradients."""

from __future__ import annotations

import jax.numpy as jnp
import optax

from mtlx._src import builders


def mean() -> optax.GradientTransformationExtraArgs:
    r"""The mean of the task gradients, :math:`\frac{1}{T} \sum_t \nabla L_t`.

    The gradient of the mean loss; TorchJD's ``Mean`` aggregator. One backward pass with the
    engine's Jacobian.

    Properties: permutation-invariant, linear.
    """
    return builders.fixed_weighting(lambda t: jnp.full((t,), 1.0 / t), name="mean")
