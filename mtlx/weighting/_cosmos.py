"""COSMOS: linear scalarization with a cosine-similarity penalty toward the preference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mtlx._src import checks
from mtlx._src.methods import preference_weighting
from mtlx._src.tolerances import REFERENCE_EPS
from mtlx._src.weighting import Stats, WeightingTransformation


def cosmos_weights(
    task_losses: jax.Array, pref_vector: jax.Array, lambda_: jax.typing.ArrayLike
) -> jax.Array:
    r"""Gradient of :math:`r^\top L - \lambda \cos(r, L)` in the losses ``L``.

    .. math:: w = r - \lambda \Big( \frac{r}{\|r\| \|L\|}
       - \frac{(r^\top L)\, L}{\|r\| \|L\|^3} \Big)

    with each norm clamped to at least :math:`10^{-8}` (as torch's ``cosine_similarity``; below it
    the norm is a constant and its term drops).

    Args:
      task_losses: ``(T,)`` losses.
      pref_vector: ``(T,)`` preference :math:`r`.
      lambda_: the penalty :math:`\lambda \ge 0`.

    Returns:
      ``(T,)`` weights.
    """
    # torch.nn.functional.cosine_similarity clamps each norm to at least 1e-8.
    r_norm = jnp.maximum(jnp.linalg.norm(pref_vector), REFERENCE_EPS)
    l_norm_raw = jnp.linalg.norm(task_losses)
    l_norm = jnp.maximum(l_norm_raw, REFERENCE_EPS)
    radial = jnp.where(
        l_norm_raw > REFERENCE_EPS, jnp.dot(pref_vector, task_losses) / l_norm**2, 0.0
    )
    cosine_gradient = (pref_vector - radial * task_losses) / (r_norm * l_norm)
    return pref_vector - lambda_ * cosine_gradient


def cosmos(
    pref_vector: jax.typing.ArrayLike, lambda_: jax.typing.ArrayLike = 1.0
) -> WeightingTransformation:
    r"""COSMOS scalarization, Ruchte & Grabocka (ICDM 2021).

    .. math:: r^\top L - \lambda \cos(r, L) = \sum_t r_t L_t
       - \lambda \frac{r^\top L}{\|r\| \|L\|}

    a linear scalarization rewarded for aligning the loss vector with the preference :math:`r`,
    which spreads the solutions along the Pareto front. The update is :math:`\sum_t w_t \nabla L_t`
    with :func:`cosmos_weights`: ONE backward pass with the engine's Jacobian. TorchJD's
    ``scalarization.COSMOS(lambda_, weights)``.

    Args:
      pref_vector: ``(T,)`` preference :math:`r`. The paper resamples it from a Dirichlet at every
        step (and feeds it to the model): vary it through ``optax.inject_hyperparams``.
      lambda_: :math:`\lambda \ge 0`; 0 is the linear scalarization. The paper uses 0.01 to 8
        depending on the dataset (TorchJD has no default; 1.0 here).

    Static under ``optax.inject_hyperparams`` (``static_args``): none; every numeric argument
    may be injected.

    Returns:
      A transformation from a per-task Jacobian to the update; it needs ``task_losses=``.
      Task-specific leaves are weighted too.

    Raises:
      ValueError: (concrete losses, outside ``jax.jit``) the loss vector is zero (norm below
        1e-8), where :math:`\cos(r, L)` is undefined. Inside ``jax.jit``: the penalty's gradient
        is :math:`\propto 1 / \|L\|`, so the update grows as the losses shrink; at
        :math:`\|L\| \le 10^{-8}` the norm is clamped to 1e-8 as in torch's
        ``cosine_similarity`` (TorchJD's result), an update ~1e8 :math:`\lambda` times the
        preference-weighted gradient, finite.

    Properties: stateless; equal to ``scalarization(pref_vector)`` for :math:`\lambda = 0`; the
      penalty's gradient is orthogonal to the losses (it only rotates the loss vector).

    .. note::
       The full COSMOS method also conditions the model on the preference; that is left to the
       model (as in TorchJD).

    References:
      Ruchte & Grabocka, "Scalable Pareto Front Approximation for Deep Multi-Objective Learning",
      ICDM 2021.
    """
    checks.nonnegative("lambda_", lambda_)

    def weights_of(stats: Stats, pref: jax.Array) -> jax.Array:
        losses = stats.losses
        no_penalty = not checks.is_traced(lambda_) and np.all(np.asarray(lambda_) == 0)
        if (
            not no_penalty
            and not checks.is_traced(losses)
            and np.linalg.norm(np.asarray(losses)) <= REFERENCE_EPS
        ):
            raise ValueError(
                "mtlx.cosmos: the loss vector is zero, where its cosine penalty cos(r, L) is "
                f"undefined (its gradient grows as 1 / ||L||); got {losses}. Use lambda_=0 (the "
                "linear scalarization) once the losses vanish."
            )
        return cosmos_weights(losses, pref.astype(losses.dtype), lambda_)

    return preference_weighting("cosmos", weights_of, jnp.asarray(pref_vector), reads="losses")
