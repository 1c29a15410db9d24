"""UW: uncertainty weighting with learned per-task log-variances (Kendall et al., CVPR 2018)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtlx._src import checks
from mtlx._src.learned import init_learned, overflow_safe_adam, step_learned
from mtlx._src.methods import loss_scalarization
from mtlx._src.weighting import Stats, WeightingTransformation


class UWState(NamedTuple):
    """State of :func:`uw`."""

    log_vars: jax.Array  # (T,) learned log-variances s_t = log sigma_t^2
    opt_state: optax.OptState  # state of the optimizer that learns log_vars


def uw_weights(log_vars: jax.Array) -> jax.Array:
    r"""UW loss weights :math:`w_t = \tfrac12 e^{-s_t}`, shape ``(T,)``: the factor of :math:`L_t`
    in :math:`\sum_t \tfrac12 e^{-s_t} L_t + \tfrac12 s_t`."""
    return 0.5 * jnp.exp(-log_vars)


def uw_log_var_grad(log_vars: jax.Array, task_losses: jax.Array) -> jax.Array:
    r"""Gradient of the UW objective with respect to the log-variances, shape ``(T,)``.

    .. math:: \frac{\partial}{\partial s_t}\Big(\tfrac12 e^{-s_t} L_t + \tfrac12 s_t\Big)
       = \tfrac12\,(1 - e^{-s_t} L_t)

    zero at :math:`s_t = \log L_t`, the closed form that UW-SO (:func:`mtlx.uw_so`) uses directly.
    """
    return 0.5 * (1.0 - jnp.exp(-log_vars) * task_losses.astype(log_vars.dtype))


def uw(
    num_tasks: int,
    learning_rate: jax.typing.ArrayLike = 1e-3,
    *,
    init_log_var: jax.typing.ArrayLike = 0.0,
    optimizer: Callable[[jax.typing.ArrayLike], optax.GradientTransformation] = overflow_safe_adam,
) -> WeightingTransformation:
    r"""Uncertainty weighting (UW), Kendall, Gal & Cipolla (CVPR 2018).

    Each task has a learned log-variance :math:`s_t = \log\sigma_t^2`, and the model minimises

    .. math:: \mathcal L(\theta, s) = \textstyle\sum_t \tfrac12 e^{-s_t} L_t(\theta)
       + \tfrac12 s_t,
       \qquad \text{update} = \textstyle\sum_t \tfrac12 e^{-s_t} \nabla L_t

    (the convention of TorchJD's ``scalarization.UW`` and LibMTL's ``UW``). The update is the
    model's gradient of :math:`\mathcal L` (heads included): one backward pass with the engine's
    Jacobian. The :math:`s_t` live in the state and take one optimizer step per update, with the
    gradient :math:`\tfrac12(1 - e^{-s_t} L_t)` (:func:`uw_log_var_grad`) evaluated at the same
    :math:`s` as the weights: exactly what backpropagating :math:`\mathcal L` into the model and the
    :math:`s_t` together, then stepping one optimizer, does in the reference implementations.

    Args:
      num_tasks: T, the number of log-variances (static).
      learning_rate: the learning rate of the log-variances' optimizer. The references put the
        :math:`s_t` in the model's optimizer: pass the model's learning rate to match them.
      init_log_var: initial :math:`s_t` (scalar or ``(T,)``): 0 (weights 1/2) as TorchJD and the
        paper; LibMTL uses -0.5.
      optimizer: optax optimizer factory for the :math:`s_t`, called with ``learning_rate``
        (by default Adam, as ``optax.adam`` but with a second moment that cannot overflow: a loss of
        1e30 would square to inf in float32 and stop optax.adam's steps for good; e.g.
        ``optax.sgd`` or ``functools.partial(optax.adam, b1=0.)``).

    Static under ``optax.inject_hyperparams`` (``static_args``): ``num_tasks``, ``optimizer``;
    every other numeric argument may be injected.

    Returns:
      A transformation whose state is :class:`UWState`; ``task_losses`` (``(T,)``) is required.

    Properties: permutation-invariant for a constant ``init_log_var``, positively homogeneous in
      the Jacobian, weights positive. At the optimum of :math:`s`, :math:`w_t = 1/(2 L_t)`.

    .. warning::
      The objective has a minimum in :math:`s_t` only for :math:`L_t > 0`: with a zero loss the
      :math:`s_t` decrease at every step and the weight :math:`\tfrac12 e^{-s_t}` grows without
      bound (a negative loss, e.g. a continuous NLL, diverges the same way).

    References:
      Kendall, Gal & Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses for Scene
      Geometry and Semantics", CVPR 2018.
    """
    checks.positive_int("num_tasks", num_tasks)
    if not checks.is_traced(init_log_var):
        start = np.asarray(init_log_var)
        if start.shape not in ((), (num_tasks,)) or not np.all(np.isfinite(start)):
            raise ValueError(
                f"init_log_var must be a finite scalar or a ({num_tasks},) vector; got "
                f"{init_log_var!r}."
            )
    log_var_optimizer = optimizer(learning_rate)

    def init(params) -> UWState:
        del params
        dtype = jnp.result_type(float)
        log_vars = jnp.broadcast_to(jnp.asarray(init_log_var, dtype), (num_tasks,))
        log_vars, opt_state = init_learned(log_var_optimizer, log_vars)
        return UWState(log_vars=log_vars, opt_state=opt_state)

    def weights(stats: Stats, state: UWState) -> tuple[jax.Array, UWState]:
        grad = uw_log_var_grad(state.log_vars, jax.lax.stop_gradient(stats.losses))
        log_vars, opt_state = step_learned(log_var_optimizer, state.log_vars, state.opt_state, grad)
        return uw_weights(state.log_vars), UWState(log_vars=log_vars, opt_state=opt_state)

    return loss_scalarization("uw", weights, init=init, num_tasks=num_tasks)
