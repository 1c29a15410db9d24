"""IMTL-L: impartial multi-task learning, loss balance with learned loss scales."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtlx._src.learned import init_learned, overflow_safe_adam, step_learned
from mtlx._src.methods import loss_scalarization
from mtlx._src.weighting import Stats, WeightingTransformation


def imtl_l_weights(log_scales: jax.Array) -> jax.Array:
    r"""IMTL-L weights ``w_t = exp(s_t)``: the model gradient of :math:`\sum_t e^{s_t} L_t - s_t`.

    Args:
      log_scales: ``(T,)`` the learned scales :math:`s_t`.

    Returns:
      ``(T,)`` positive weights.
    """
    return jnp.exp(log_scales)


def imtl_l_scale_gradient(log_scales: jax.Array, task_losses: jax.Array) -> jax.Array:
    r"""``d/ds_t`` of :math:`\sum_t e^{s_t} L_t - s_t`, :math:`e^{s_t} L_t - 1`; zero at
    :math:`s_t = -\log L_t` (every scaled loss equal to 1)."""
    return jnp.exp(log_scales) * task_losses - 1.0


class IMTLLState(NamedTuple):
    """State of :func:`imtl_l` (and of the loss-scale part of :func:`imtl`)."""

    log_scales: jax.Array  # (T,) the learned s_t; the task weights are exp(s_t)
    scale_opt_state: Any  # state of the optimizer that learns s


def init_scales(num_tasks: int, optimizer: optax.GradientTransformation) -> IMTLLState:
    """The scales at :math:`s = 0` (weights 1) and their optimizer's state."""
    log_scales, opt_state = init_learned(optimizer, jnp.zeros((num_tasks,)))
    return IMTLLState(log_scales=log_scales, scale_opt_state=opt_state)


def imtl_l(
    num_tasks: int,
    learning_rate: jax.typing.ArrayLike = 1e-3,
    *,
    optimizer: Callable[[jax.typing.ArrayLike], optax.GradientTransformation] = overflow_safe_adam,
) -> WeightingTransformation:
    r"""IMTL-L, the loss-balance part of Impartial Multi-Task Learning (Liu et al., ICLR 2021).

    The model minimises :math:`\sum_t e^{s_t} L_t - s_t` with learned scales :math:`s_t`, so the
    update is :math:`\sum_t e^{s_t} \nabla L_t` (ONE backward pass with the engine's Jacobian).

    **How the scales are learned.** In the paper (and TorchJD's ``scalarization.IMTLL``) the
    :math:`s_t` are parameters trained jointly with the model by the same loss. In an optax chain
    the transform only sees gradients, so it learns them itself: each update, after computing the
    weights from the current :math:`s`, it takes one step of ``optimizer(learning_rate)`` (Adam by
    default) along :math:`\partial / \partial s_t = e^{s_t} L_t - 1`, whose
    fixed point is :math:`e^{s_t} = 1 / L_t` (every scaled loss equal to 1). This is exactly what a
    PyTorch optimizer holding the :math:`s_t` does with TorchJD's ``IMTLL``.

    Args:
      num_tasks: T, the number of learned scales.
      learning_rate: learning rate of the scales' optimizer. The references put the :math:`s_t` in
        the model's optimizer: pass the model's learning rate to match them.
      optimizer: optax optimizer factory for the scales, called with ``learning_rate``
        (Adam by default, overflow-safe as in :func:`mtlx.uw`; ``optax.sgd`` mirrors a PyTorch SGD).

    Static under ``optax.inject_hyperparams`` (``static_args``): ``num_tasks``, ``optimizer``;
    every other numeric argument may be injected.

    Returns:
      A transformation from a per-task Jacobian to :math:`\sum_t e^{s_t} \nabla L_t`; it needs
      ``task_losses=`` (shape ``(T,)``). Task-specific leaves are weighted too.

    With ``optax.inject_hyperparams``, declare ``static_args=("num_tasks", "optimizer")``.

    Properties: the first update is the plain sum (:math:`s = 0`); weights positive; stateful.
      Equivalent to uncertainty weighting up to the parametrisation of the scales.

    References:
      Liu, Li, Kuang, Xue, Chen, Yang, Liao & Zhang, "Towards Impartial Multi-task Learning",
      ICLR 2021.
    """
    opt = optimizer(learning_rate)

    def init(params: Any) -> IMTLLState:
        del params
        return init_scales(num_tasks, opt)

    def weights(stats: Stats, state: IMTLLState) -> tuple[jax.Array, IMTLLState]:
        losses = stats.losses
        w = imtl_l_weights(state.log_scales)
        gradient = imtl_l_scale_gradient(state.log_scales, losses.astype(state.log_scales.dtype))
        log_scales, opt_state = step_learned(opt, state.log_scales, state.scale_opt_state, gradient)
        return w.astype(losses.dtype), IMTLLState(log_scales, opt_state)

    return loss_scalarization("imtl_l", weights, init=init, num_tasks=num_tasks)
