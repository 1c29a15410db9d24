"""GLS: geometric loss strategy, the gradient of the geometric mean of the task losses."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtlx._src import checks
from mtlx._src.methods import loss_scalarization
from mtlx._src.weighting import Stats, WeightingTransformation


def gls_weights(task_losses: jax.Array) -> jax.Array:
    r"""GLS weights, the gradient of the geometric mean: ``w_t = (prod_s L_s)^(1/T) / (T L_t)``.

    Computed in log space (``exp(mean(log L))``), so a product of many small or large losses does
    not under- or overflow.

    Args:
      task_losses: ``(T,)`` positive task losses.

    Returns:
      ``(T,)`` non-negative weights; all 0 when a loss is 0 or negative (the geometric mean is
      then 0; its gradient in the zero loss is infinite).
    """
    positive = task_losses > 0
    # The gradient in a zero loss is infinite (L^(1/T - 1)): define the weights as 0 there, as the
    # geometric mean itself is 0; the clamp keeps log and the division finite on that branch.
    losses = jnp.where(positive, task_losses, 1.0)
    geometric_mean = jnp.exp(jnp.mean(jnp.log(losses)))
    weights = geometric_mean / (task_losses.shape[0] * losses)
    return jnp.where(jnp.all(positive), weights, jnp.zeros_like(weights))


def gls() -> WeightingTransformation:
    r"""Geometric Loss Strategy (GLS), Chennupati et al. (CVPR Workshops 2019).

    The update is the gradient of the geometric mean of the task losses,

    .. math:: \nabla \Big(\prod_t L_t\Big)^{1/T} = \sum_t \frac{(\prod_s L_s)^{1/T}}{T\, L_t}
       \nabla L_t,

    ONE backward pass with the engine's Jacobian. LibMTL's ``GLS`` and TorchJD's
    ``scalarization.GeometricMean`` minimise the same function (``prod(L)^(1/T)`` and
    ``exp(mean(log L))``), so they give the same gradient; mtlx computes it in log space as TorchJD.

    Static under ``optax.inject_hyperparams`` (``static_args``): none; every numeric argument
    may be injected.

    Returns:
      A transformation from a per-task Jacobian to the gradient above; it needs ``task_losses=``
      (positive, shape ``(T,)``). Task-specific leaves are weighted too.

    Raises:
      ValueError: (outside ``jax.jit``) if a task loss is negative; the geometric mean is defined
        for non-negative losses only. Inside ``jax.jit`` a loss <= 0 gives zero weights.

    Large losses: task t's weight is the geometric mean over ``T L_t``, so one loss of 1e30 among
    losses of 1 (T = 3) weights the other tasks' gradients by 1e10 / 3: the gradient of the
    geometric mean, finite, and what GLS means (it is scale-free per task only up to the product
    of the scales, see below). Pair it with an optimizer that normalises the step (Adam) or a
    gradient clip after it.

    Properties: stateless; invariant to a per-task rescaling of the losses up to a global factor
      (scaling ``L_t`` by ``c_t`` scales the update by ``(prod_t c_t)^(1/T)``), the reason GLS is
      used for tasks with losses on different scales; the weights sum to the geometric over the
      harmonic mean of the losses (at least 1, equal to 1 when the losses are equal).

    .. note::
       LibMTL's ``GLS.backward`` returns ``L / (T prod(L))`` as its "batch weight" for logging; the
       weights its backward pass actually applies are the ones above.

    References:
      Chennupati, Sistu, Yogamani & Rawashdeh, "MultiNet++: Multi-Stream Feature Aggregation and
      Geometric Loss Strategy for Multi-Task Learning", CVPR Workshops 2019.
    """

    def weights(stats: Stats, state: optax.EmptyState) -> tuple[jax.Array, optax.EmptyState]:
        losses = stats.losses
        if not checks.is_traced(losses) and np.any(np.asarray(losses) < 0):
            raise ValueError(
                f"mtlx.gls needs non-negative task losses (a geometric mean); got {losses}."
            )
        return gls_weights(losses), state

    return loss_scalarization("gls", weights)
