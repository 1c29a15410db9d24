"""UW: uncertainty weighting with learned per-task log-variances (Kendall et al., CVPR 2018)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtlx._src import builders


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
    optimizer: Callable[[jax.typing.ArrayLike], optax.GradientTransformation] = optax.adam,
) -> optax.GradientTransformationExtraArgs:
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
        (``optax.adam`` by default; e.g. ``optax.sgd`` or ``functools.partial(optax.adam, b1=0.)``).

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
    if not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"uw needs num_tasks, a positive int; got {num_tasks!r}.")
    if not isinstance(init_log_var, jax.core.Tracer):
        init = np.asarray(init_log_var)
        if init.shape not in ((), (num_tasks,)) or not np.all(np.isfinite(init)):
            raise ValueError(
                f"init_log_var must be a finite scalar or a ({num_tasks},) vector; got "
                f"{init_log_var!r}."
            )
    log_var_optimizer = optimizer(learning_rate)

    def init_fn(params):
        del params
        dtype = jnp.result_type(float)
        log_vars = jnp.broadcast_to(jnp.asarray(init_log_var, dtype), (num_tasks,))
        return UWState(log_vars=log_vars, opt_state=log_var_optimizer.init(log_vars))

    def weights_fn(task_losses, state):
        log_vars = state.log_vars
        builders.check_num_tasks("uw", log_vars.shape[0], task_losses.shape[0])
        weights = uw_weights(log_vars)
        grad = uw_log_var_grad(log_vars, jax.lax.stop_gradient(task_losses))
        step, opt_state = log_var_optimizer.update(grad, state.opt_state, log_vars)
        new_log_vars = optax.apply_updates(log_vars, step)
        return weights, UWState(log_vars=new_log_vars, opt_state=opt_state)

    return builders.loss_weighting(weights_fn, name="uw", init_fn=init_fn, needs_losses=True)
