"""PBI: penalty-based boundary intersection scalarization of the task losses."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mtlx._src import checks
from mtlx._src.methods import preference_weighting
from mtlx._src.tolerances import PBI_SQRT_EPS
from mtlx._src.weighting import Stats, WeightingTransformation, as_pref_vector


def pbi_weights(
    task_losses: jax.Array,
    pref_vector: jax.Array,
    theta: jax.typing.ArrayLike = 5.0,
    reference: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    r"""Gradient of PBI's :math:`d_1 + \theta d_2` in the losses: ``w = u + theta * p / d2``.

    With :math:`f = L - z^*`, :math:`u = \lambda / \|\lambda\|`, :math:`d_1 = f^\top u`, the
    perpendicular part :math:`p = f - d_1 u` and :math:`d_2 = \sqrt{\|p\|^2 + 10^{-12}}`.

    Args:
      task_losses: ``(T,)`` losses.
      pref_vector: ``(T,)`` non-negative preference direction :math:`\lambda` (not all zero).
      theta: penalty :math:`\theta \ge 0` on the distance to the preference direction.
      reference: ideal point :math:`z^*` (scalar or ``(T,)``); ``None`` for 0.

    Returns:
      ``(T,)`` weights; not all positive: the penalty pulls the losses toward the direction.
    """
    shifted = task_losses if reference is None else task_losses - reference
    direction = pref_vector / jnp.linalg.norm(pref_vector)
    perpendicular = shifted - jnp.dot(shifted, direction) * direction
    # A finite gradient when the losses lie exactly on the preference direction (always for T = 1).
    d2 = jnp.sqrt(jnp.dot(perpendicular, perpendicular) + PBI_SQRT_EPS)
    return direction + theta * perpendicular / d2


def pbi(
    pref_vector: jax.typing.ArrayLike,
    theta: jax.typing.ArrayLike = 5.0,
    reference: jax.typing.ArrayLike | None = None,
) -> WeightingTransformation:
    r"""Penalty-based boundary intersection (PBI), Zhang & Li (IEEE TEVC 2007, MOEA/D).

    The model minimises, for :math:`f = L - z^*` and the unit preference :math:`u = \lambda /
    \|\lambda\|`,

    .. math:: d_1 + \theta d_2, \qquad d_1 = f^\top u, \quad d_2 = \|f - d_1 u\|,

    the distance along the preference direction plus :math:`\theta` times the distance to it. The
    update is :math:`\sum_t w_t \nabla L_t` with :func:`pbi_weights`: ONE backward pass with the
    engine's Jacobian. TorchJD's ``scalarization.PBI(theta, weights, reference)``.

    Args:
      pref_vector: ``(T,)`` non-negative preference :math:`\lambda`. Resample it (e.g. from a
        Dirichlet) through ``optax.inject_hyperparams`` to cover the Pareto front.
      theta: :math:`\theta \ge 0`; 0 reduces PBI to the projection on :math:`u` (the paper: 5).
      reference: the ideal point :math:`z^*`, a lower bound on the losses; ``None`` for 0.

    Static under ``optax.inject_hyperparams`` (``static_args``): none; every numeric argument
    may be injected.

    Returns:
      A transformation from a per-task Jacobian to the update; it needs ``task_losses=``.
      Task-specific leaves are weighted too.

    Properties: stateless; the weights are :math:`u` when the losses lie on the preference
      direction; invariant to the scale of ``pref_vector``.

    .. note::
       :math:`10^{-12}` is added under the square root of :math:`d_2`, as TorchJD, so the update is
       finite when the losses lie exactly on the preference direction.

    References:
      Zhang & Li, "MOEA/D: A Multiobjective Evolutionary Algorithm Based on Decomposition", IEEE
      Transactions on Evolutionary Computation, 2007.
    """
    pref = as_pref_vector(jnp.asarray(pref_vector))
    if not checks.is_traced(pref) and not (
        np.all(np.asarray(pref) >= 0) and np.any(np.asarray(pref) > 0)
    ):
        raise ValueError(f"pref_vector must be non-negative and not all zero; got {pref_vector}.")
    checks.nonnegative("theta", theta)

    def weights_of(stats: Stats, pref: jax.Array) -> jax.Array:
        return pbi_weights(stats.losses, pref.astype(stats.losses.dtype), theta, reference)

    return preference_weighting("pbi", weights_of, pref, reads="losses")
