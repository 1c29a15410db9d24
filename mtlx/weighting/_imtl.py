"""IMTL: impartial multi-task learning, hybrid of loss (IMTL-L) and gradient (IMTL-G) balance."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from mtlx._src import builders, jacobians
from mtlx.weighting._imtl_g import imtl_g_weights
from mtlx.weighting._imtl_l import (
    imtl_l_scale_gradient,
    imtl_l_weights,
    init_scales,
    step_scales,
)


def imtl_weights(gramian: jax.Array, log_scales: jax.Array) -> jax.Array:
    r"""IMTL weights ``w = alpha exp(s)``, ``alpha = imtl_g_weights(D G D)``, ``D = diag(exp(s))``.

    ``D G D`` is the Gramian of the scaled losses' gradients :math:`e^{s_t} g_t`; IMTL-G's weights
    ``alpha`` apply to those rows, so the weights of the raw rows are ``alpha_t e^{s_t}``.
    """
    scales = imtl_l_weights(log_scales).astype(gramian.dtype)
    alpha = imtl_g_weights(gramian * jnp.outer(scales, scales))
    return alpha * scales


def imtl(
    num_tasks: int,
    learning_rate: jax.typing.ArrayLike = 1e-3,
    *,
    optimizer: Callable[[jax.typing.ArrayLike], optax.GradientTransformation] = optax.adam,
) -> optax.GradientTransformationExtraArgs:
    r"""IMTL, hybrid Impartial Multi-Task Learning (IMTL-L + IMTL-G), Liu et al. (ICLR 2021).

    The losses are scaled as in IMTL-L, :math:`\tilde L_t = e^{s_t} L_t - s_t`, and IMTL-G balances
    the scaled gradients :math:`\tilde g_t = e^{s_t} g_t`: with
    :math:`\alpha = \mathrm{IMTL\text{-}G}(\tilde G)` (:func:`mtlx.imtl_g_weights`,
    :math:`\tilde G = D G D`, :math:`D = \mathrm{diag}(e^{s})`),

    .. math:: \text{update} = \sum_t \alpha_t e^{s_t} g_t, \qquad
       \sum_t \alpha_t = 1, \quad \langle \text{update}, \tilde g_t / \|\tilde g_t\| \rangle
       \text{ equal for all } t.

    It reads the Gramian (**T backward passes**). The scales :math:`s` are learned in the state as
    in :func:`mtlx.imtl_l`: one step of ``optimizer(learning_rate)`` per update along
    :math:`e^{s_t} L_t - 1` (LibMTL's ``IMTL`` learns them with the model's optimizer, from the same
    gradient). As LibMTL's ``IMTL``, task-specific leaves get their own scaled gradient
    :math:`e^{s_t} \nabla L_t`.

    Args:
      num_tasks: T, the number of learned scales.
      learning_rate: learning rate of the scales' optimizer.
      optimizer: optax optimizer factory for the scales, called with ``learning_rate``
        (``optax.adam`` by default).

    Returns:
      A transformation from a per-task Jacobian to the update above; it needs ``task_losses=`` and
      accepts a precomputed ``gramian=`` (of the unscaled rows).

    With ``optax.inject_hyperparams``, declare ``static_args=("num_tasks", "optimizer")``.

    Properties: with :math:`s = 0` (the first update) it is IMTL-G; the weights of the scaled rows
      sum to 1; positively homogeneous in the Jacobian; stateful.

    References:
      Liu, Li, Kuang, Xue, Chen, Yang, Liao & Zhang, "Towards Impartial Multi-task Learning",
      ICLR 2021.
    """
    if not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"num_tasks must be a positive int; got {num_tasks!r}.")
    opt = optimizer(learning_rate)

    def init_fn(params):
        del params
        return init_scales(num_tasks, opt)

    def update_fn(updates, state, params=None, *, task_losses=None, gramian=None, **extra_args):
        del params, extra_args
        jac = jacobians.as_jacobian(updates)
        losses = jacobians.check_task_losses(
            task_losses, jac.num_tasks, required=True, method="imtl"
        )
        builders.check_num_tasks("imtl", num_tasks, jac.num_tasks)
        if gramian is None:
            gramian = jac.gramian()
        elif gramian.shape != (num_tasks, num_tasks):
            raise ValueError(
                f"gramian has shape {gramian.shape}; the Jacobian has {num_tasks} tasks."
            )
        weights = imtl_weights(gramian, state.log_scales)
        gradient = imtl_l_scale_gradient(state.log_scales, losses.astype(state.log_scales.dtype))
        new_state = step_scales(opt, state, gradient)
        if not jac.has_task_specific:
            return jac.combine(weights, task_specific="own"), new_state
        shared = jax.tree.leaves(jac.combine(weights, task_specific="own"))
        heads = jax.tree.leaves(
            jac.combine(imtl_l_weights(state.log_scales), task_specific="weighted")
        )
        out = [s if m else h for s, h, m in zip(shared, heads, jac.shared_mask)]
        return jax.tree.unflatten(jac.treedef, out), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
