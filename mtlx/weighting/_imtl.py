"""IMTL: impartial multi-task learning, hybrid of loss (IMTL-L) and gradient (IMTL-G) balance."""

from __future__ import annotations

from collections.abc import Callable

import jax
import optax

from mtlx._src.jacobians import scale_gramian
from mtlx._src.learned import overflow_safe_adam
from mtlx._src.weighting import (
    Stats,
    TaskWeights,
    Weighting,
    WeightingTransformation,
    as_transform,
)
from mtlx.weighting._imtl_g import imtl_g, imtl_g_weights
from mtlx.weighting._imtl_l import IMTLLState, imtl_l, imtl_l_weights


def imtl_weights(gramian: jax.Array, log_scales: jax.Array) -> jax.Array:
    r"""IMTL weights ``w = alpha exp(s)``, ``alpha = imtl_g_weights(D G D)``, ``D = diag(exp(s))``.

    ``D G D`` is the Gramian of the scaled losses' gradients :math:`e^{s_t} g_t`; IMTL-G's weights
    ``alpha`` apply to those rows, so the weights of the raw rows are ``alpha_t e^{s_t}``.
    """
    scales = imtl_l_weights(log_scales).astype(gramian.dtype)
    return imtl_g_weights(scale_gramian(gramian, scales)) * scales


def imtl(
    num_tasks: int,
    learning_rate: jax.typing.ArrayLike = 1e-3,
    *,
    optimizer: Callable[[jax.typing.ArrayLike], optax.GradientTransformation] = overflow_safe_adam,
) -> WeightingTransformation:
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
        (Adam by default, overflow-safe as in :func:`mtlx.uw`).

    Static under ``optax.inject_hyperparams`` (``static_args``): ``num_tasks``, ``optimizer``;
    every other numeric argument may be injected.

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
    # IMTL = IMTL-L's learned scales d = exp(s), then IMTL-G on the scaled rows d_t g_t: the
    # composition of the two weighting values, not a copy of their math.
    loss_balance = imtl_l(num_tasks, learning_rate, optimizer=optimizer).weighting
    gradient_balance = imtl_g().weighting

    def weights(stats: Stats, state: IMTLLState) -> tuple[TaskWeights, IMTLLState]:
        scales, new_state = loss_balance.weights(stats, state)
        scales = scales.astype(stats.gramian.dtype)
        scaled = stats._replace(gramian=scale_gramian(stats.gramian, scales))
        alpha, _ = gradient_balance.weights(scaled, gradient_balance.init(None))
        return TaskWeights(shared=alpha * scales, task_specific=scales), new_state

    return as_transform(
        Weighting(
            "imtl",
            weights,
            init=loss_balance.init,
            reads="gramian",
            needs_losses=True,
            num_tasks=num_tasks,
        )
    )
