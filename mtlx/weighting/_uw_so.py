"""UW-SO and UW-O: the closed-form optimum of uncertainty weighting, (soft-)normalised."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtlx._src import checks
from mtlx._src.methods import loss_scalarization
from mtlx._src.tolerances import REFERENCE_EPS
from mtlx._src.weighting import Stats, WeightingTransformation


def _check_hyperparameter(value: jax.typing.ArrayLike, what: str, *, allow_zero: bool) -> None:
    if checks.is_traced(value):
        return  # injected hyperparameters (optax.inject_hyperparams) are checked by their owner
    v = np.asarray(value)
    if v.ndim != 0 or not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{what} must be a finite scalar {bound}; got {value!r}.")


def _loss_weighting(name: str, weights_of) -> WeightingTransformation:
    """The stateless scalarization ``w = weights_of(losses)`` (heads weighted too)."""

    def weights(stats: Stats, state: optax.EmptyState) -> tuple[jax.Array, optax.EmptyState]:
        return weights_of(stats.losses), state

    return loss_scalarization(name, weights)


def uw_o_weights(task_losses: jax.Array, eps: jax.typing.ArrayLike = REFERENCE_EPS) -> jax.Array:
    r"""UW-O weights :math:`w_t = 1 / (\mathrm{sg}[L_t] + \epsilon)`, shape ``(T,)``.

    The closed-form minimiser :math:`\sigma_t = L_t` of the uncertainty-weighting objective
    :math:`L_t / \sigma_t + \log \sigma_t` (an L1 likelihood), plugged back with a stop-gradient.
    Negative losses are clipped to 0, the UW optimum's limit :math:`\sigma_t \to 0`: a finite weight
    ``1 / eps``, never a negative or NaN one.
    """
    losses = jax.lax.stop_gradient(jnp.asarray(task_losses))
    losses = losses.astype(jnp.promote_types(losses.dtype, jnp.float32))
    return 1.0 / (jnp.maximum(losses, 0.0) + eps)


def uw_so_weights(
    task_losses: jax.Array,
    temperature: jax.typing.ArrayLike = 1.0,
    eps: jax.typing.ArrayLike = REFERENCE_EPS,
) -> jax.Array:
    r"""UW-SO weights :math:`w = \mathrm{softmax}\big(1 / (\tau (\mathrm{sg}[L] + \epsilon))\big)`.

    The UW-O weights :func:`uw_o_weights` normalised by a softmax of temperature :math:`\tau`:
    :math:`\tau \to 0` puts all the weight on the smallest loss, :math:`\tau \to \infty` gives
    uniform weights :math:`1/T`. Shape ``(T,)``, on the simplex.
    """
    return jax.nn.softmax(uw_o_weights(task_losses, eps) / temperature)


def uw_so(
    temperature: jax.typing.ArrayLike = 1.0, eps: jax.typing.ArrayLike = REFERENCE_EPS
) -> WeightingTransformation:
    r"""Soft optimal uncertainty weighting (UW-SO), Kirchdorfer et al. (GCPR 2024).

    Uncertainty weighting's objective :math:`\sum_t L_t/\sigma_t + \log\sigma_t` is minimised in
    closed form by :math:`\sigma_t = L_t`; UW-SO weights the losses by the inverse losses,
    softmax-normalised with a temperature, with no learned parameter and no inertia:

    .. math:: w = \mathrm{softmax}\!\Big(\frac{1}{\tau\,(\mathrm{sg}[L] + \epsilon)}\Big), \qquad
       \text{update} = \textstyle\sum_t w_t \nabla L_t

    Heads are weighted too (the gradient of :math:`\sum_t w_t L_t`). With the engine's Jacobian
    this is ONE backward pass: UW-SO costs one equal-weighting step.

    Args:
      temperature: softmax temperature :math:`\tau > 0` (the paper tunes it per dataset; 1.0 is its
        code's default).
      eps: added to the losses before inverting them (``1e-8`` as in the authors' code).

    Static under ``optax.inject_hyperparams`` (``static_args``): none; every numeric argument
    may be injected.

    Returns:
      A stateless transformation; ``task_losses`` (``(T,)``) is required.

    Properties: permutation-invariant, positively homogeneous in the Jacobian; weights on the
      simplex. Not invariant to the losses' scale (the softmax sees ``1/L``, so rescaling the
      losses acts like changing the temperature).

    .. warning::
      The derivation needs non-negative losses (:math:`\sigma_t = L_t`). A negative loss is
      clipped to 0, so that task gets the weight of a zero loss (all of it as
      :math:`\tau \to 0`); shift losses that can be negative (e.g. a continuous NLL).

    References:
      Kirchdorfer et al., "Analytical Uncertainty-Based Loss Weighting in Multi-Task Learning",
      GCPR 2024 (arXiv:2408.07985).
    """
    _check_hyperparameter(temperature, "temperature", allow_zero=False)
    _check_hyperparameter(eps, "eps", allow_zero=False)

    return _loss_weighting("uw_so", lambda losses: uw_so_weights(losses, temperature, eps))


def uw_o(eps: jax.typing.ArrayLike = REFERENCE_EPS) -> WeightingTransformation:
    r"""Optimal uncertainty weighting (UW-O), Kirchdorfer et al. (GCPR 2024): UW-SO without softmax.

    .. math:: w_t = \frac{1}{\mathrm{sg}[L_t] + \epsilon}, \qquad
       \text{update} = \textstyle\sum_t w_t \nabla L_t = \sum_t \nabla \log L_t
       \ (\epsilon \to 0)

    Every task's gradient is divided by its loss, so the update is invariant to each loss's scale.
    One backward pass with the engine's Jacobian.

    Args:
      eps: added to the losses before inverting them (``1e-8`` as in the authors' code).

    Static under ``optax.inject_hyperparams`` (``static_args``): none; every numeric argument
    may be injected.

    Returns:
      A stateless transformation; ``task_losses`` (``(T,)``) is required.

    Properties: permutation-invariant, positively homogeneous in the Jacobian, invariant to a
      positive rescaling of any one task's loss (for ``eps`` much smaller than the losses).

    .. warning::
      The weights grow without bound as a loss goes to zero (``1 / eps`` at zero loss, and for a
      negative loss, which is clipped to 0): pair it with an adaptive optimizer or use
      :func:`uw_so`, whose softmax keeps the weights on the simplex.

    References:
      Kirchdorfer et al., "Analytical Uncertainty-Based Loss Weighting in Multi-Task Learning",
      GCPR 2024 (arXiv:2408.07985).
    """
    _check_hyperparameter(eps, "eps", allow_zero=False)

    return _loss_weighting("uw_o", lambda losses: uw_o_weights(losses, eps))
