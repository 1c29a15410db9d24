"""GradNorm: loss weights learned so that the weighted gradient norms train at a common rate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtlx._src import checks, linalg
from mtlx._src.learned import init_learned, overflow_safe_adam, step_learned
from mtlx._src.weighting import Stats, Weighting, WeightingTransformation, as_transform


def gradnorm_weights(logits: jax.Array) -> jax.Array:
    """GradNorm's loss weights ``w = T softmax(logits)``: positive and summing to T (LibMTL)."""
    return logits.shape[0] * jax.nn.softmax(logits)


def gradnorm_logits_gradient(
    logits: jax.Array,
    gramian: jax.Array,
    task_losses: jax.Array,
    initial_losses: jax.Array,
    alpha: jax.typing.ArrayLike = 1.5,
) -> jax.Array:
    r"""Logits' gradient of GradNorm's loss :math:`\sum_t |w_t \|g_t\| - \bar G\, r_t^\alpha|`.

    :math:`\bar G = \frac1T \sum_t w_t \|g_t\|` (differentiated), :math:`r_t = \tilde L_t /
    \mathrm{mean}(\tilde L)` with :math:`\tilde L_t = L_t / L_t(0)` (held constant, as the target
    :math:`\bar G r_t^\alpha` is in the paper), and :math:`w = T\,\mathrm{softmax}(\text{logits})`.
    The norms :math:`\|g_t\|` come from the Gramian's diagonal.
    """
    norms = linalg.norms_from_gramian(gramian).astype(logits.dtype)
    weights = gradnorm_weights(logits)
    weighted_norms = weights * norms
    loss_ratios = linalg.safe_divide(task_losses, initial_losses)
    inverse_rates = linalg.safe_divide(loss_ratios, jnp.mean(loss_ratios))
    target = jnp.mean(weighted_norms) * inverse_rates**alpha
    # d/dw_t sum_s |w_s n_s - target_s| = sign(w_t n_t - target_t) n_t (the target is a constant)
    grad_w = jnp.sign(weighted_norms - target) * norms
    z = jax.nn.softmax(logits)
    return logits.shape[0] * z * (grad_w - jnp.dot(z, grad_w))


class GradNormState(NamedTuple):
    """State of :func:`gradnorm`."""

    logits: jax.Array  # (T,) the loss weights are T softmax(logits)
    logits_opt_state: Any  # state of the optimizer that learns the logits
    initial_loss_sum: jax.Array  # (T,) sum of the losses that define L(0)
    count: jax.Array  # int32: updates taken so far (capped)


def gradnorm(
    num_tasks: int,
    alpha: jax.typing.ArrayLike = 1.5,
    learning_rate: jax.typing.ArrayLike = 1e-3,
    *,
    optimizer: Callable[[jax.typing.ArrayLike], optax.GradientTransformation] = overflow_safe_adam,
    warmup_steps: int = 0,
) -> WeightingTransformation:
    r"""GradNorm, Chen, Badrinarayanan, Lee & Rabinovich (ICML 2018), as LibMTL implements it.

    The update is :math:`\sum_t w_t g_t` with learned loss weights
    :math:`w = T\,\mathrm{softmax}(p)`. After each update the logits :math:`p` take one step of
    ``optimizer`` on the gradient loss

    .. math:: L_{\text{grad}} = \sum_t \big| w_t \|g_t\| - \bar G\, r_t^{\alpha} \big|, \qquad
       \bar G = \tfrac1T \textstyle\sum_s w_s \|g_s\|, \quad
       r_t = \frac{L_t / L_t(0)}{\mathrm{mean}_s\, L_s / L_s(0)},

    with the target :math:`\bar G r_t^\alpha` held constant: a task that trains slower (higher
    relative loss) is pushed to a larger gradient norm. It needs the gradient norms, the diagonal
    of the Gramian: **T backward passes** (not one), like any Gramian method.

    The weights used for an update are those before the logits' step (LibMTL's order). LibMTL trains
    the logits with the model's optimizer; in an optax chain the transform trains them itself, with
    ``optimizer(learning_rate)`` (Adam by default). The paper renormalises the weights to sum
    to T after each step; the softmax parametrisation (LibMTL) keeps them there.

    Args:
      num_tasks: T.
      alpha: the asymmetry :math:`\alpha` (the strength of the restoring force); paper and LibMTL:
        1.5.
      learning_rate: learning rate of the logits' optimizer (LibMTL: the model's learning rate).
      optimizer: optax optimizer factory for the logits, called with ``learning_rate``
        (Adam by default, overflow-safe as in :func:`mtlx.uw`).
      warmup_steps: updates with equal weights (and no logits step) first; :math:`L(0)` is the
        mean loss over them. LibMTL warms up for its first epoch. With 0 (the paper), :math:`L(0)`
        is the loss of the first update.

    Static under ``optax.inject_hyperparams`` (``static_args``): ``num_tasks``, ``optimizer``,
    ``warmup_steps``; every other numeric argument may be injected.

    Returns:
      A transformation from a per-task Jacobian to :math:`\sum_t w_t g_t`; it needs
      ``task_losses=`` and accepts a precomputed ``gramian=``. Task-specific leaves get their own
      task's gradient (as in LibMTL, where heads skip the weighting).

    With ``optax.inject_hyperparams``, declare
    ``static_args=("num_tasks", "optimizer", "warmup_steps")``.

    Properties: weights positive and summing to T; the first update is the plain sum; stateful.

    References:
      Chen, Badrinarayanan, Lee & Rabinovich, "GradNorm: Gradient Normalization for Adaptive Loss
      Balancing in Deep Multitask Networks", ICML 2018.
    """
    checks.positive_int("num_tasks", num_tasks)
    checks.nonnegative_int("warmup_steps", warmup_steps)
    checks.nonnegative("alpha", alpha)
    opt = optimizer(learning_rate)
    initial_steps = max(warmup_steps, 1)  # L(0) averages the losses of these first updates

    def init(params) -> GradNormState:
        del params
        zeros = lambda: jnp.zeros((num_tasks,))  # one array per field: steps may donate the state
        return GradNormState(*init_learned(opt, zeros()), zeros(), count=jnp.zeros((), jnp.int32))

    def weights(stats: Stats, state: GradNormState) -> tuple[jax.Array, GradNormState]:
        dtype = state.logits.dtype
        current = stats.losses.astype(dtype)
        initial_loss_sum = state.initial_loss_sum + jnp.where(
            state.count < initial_steps, current, 0.0
        )
        initial_losses = initial_loss_sum / initial_steps
        gradient = gradnorm_logits_gradient(
            state.logits, stats.gramian, current, initial_losses, alpha
        )
        warming_up = state.count < warmup_steps
        # No logits step (and no optimizer count) during the warm-up.
        logits, opt_state = step_learned(
            opt, state.logits, state.logits_opt_state, gradient, active=~warming_up
        )
        w = jnp.where(warming_up, 1.0, gradnorm_weights(state.logits))
        new_state = GradNormState(
            logits=logits,
            logits_opt_state=opt_state,
            initial_loss_sum=initial_loss_sum,
            count=jnp.minimum(state.count + 1, initial_steps).astype(jnp.int32),
        )
        return w.astype(stats.gramian.dtype), new_state

    return as_transform(
        Weighting(
            "gradnorm",
            weights,
            init=init,
            reads="gramian",
            needs_losses=True,
            num_tasks=num_tasks,
        )
    )
