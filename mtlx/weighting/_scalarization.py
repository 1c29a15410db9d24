"""Scalarization: fixed task weights (linear scalarization, TorchJD's ``Constant``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtlx._src import builders


def scalarization(weights: jax.typing.ArrayLike) -> optax.GradientTransformationExtraArgs:
    r"""Linear scalarization with fixed weights: :math:`\sum_t w_t \nabla L_t`.

    The brute-force baseline of Kirchdorfer et al. ("Analytical Uncertainty-Based Loss Weighting in
    Multi-Task Learning") and Xin et al. ("Do Current Multi-Task Optimization Methods in Deep
    Learning Even Help?", NeurIPS 2022): a grid of fixed weight vectors, the best one picked on
    validation data. TorchJD's ``Constant`` aggregator. One backward pass.

    Args:
      weights: ``(T,)`` task weights.

    Raises:
      ValueError: if ``weights`` is not a vector, or its length differs from the Jacobian's T.
    """
    weights = jnp.asarray(weights)
    if weights.ndim != 1:
        raise ValueError(f"weights must be a vector of shape (T,); got shape {weights.shape}.")
    if not isinstance(weights, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(weights))):
        raise ValueError(f"weights must be finite; got {weights}.")
    return builders.fixed_weighting(lambda t: weights, name="scalarization")
