"""Scalarization: fixed task weights (linear scalarization, TorchJD's ``Constant``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtlx._src.weighting import Stats, Weighting, WeightingTransformation, as_transform


def scalarization(weights: jax.typing.ArrayLike) -> WeightingTransformation:
    r"""Linear scalarization with fixed weights: :math:`\sum_t w_t \nabla L_t`.

    The brute-force baseline of Kirchdorfer et al. ("Analytical Uncertainty-Based Loss Weighting in
    Multi-Task Learning") and Xin et al. ("Do Current Multi-Task Optimization Methods in Deep
    Learning Even Help?", NeurIPS 2022): a grid of fixed weight vectors, the best one picked on
    validation data. TorchJD's ``Constant`` aggregator. One backward pass.

    Args:
      weights: ``(T,)`` task weights.

    Static under ``optax.inject_hyperparams`` (``static_args``): none; every numeric argument
    may be injected.

    Raises:
      ValueError: if ``weights`` is not a vector, or its length differs from the Jacobian's T.
    """
    weights = jnp.asarray(weights)
    if weights.ndim != 1:
        raise ValueError(f"weights must be a vector of shape (T,); got shape {weights.shape}.")
    if not isinstance(weights, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(weights))):
        raise ValueError(f"weights must be finite; got {weights}.")

    def weights_of(stats: Stats, state: optax.EmptyState) -> tuple[jax.Array, optax.EmptyState]:
        return weights, state

    return as_transform(
        Weighting("scalarization", weights_of, reads="nothing", task_specific="weighted")
    )
