"""FAMO: fast adaptive multitask optimization, logits learned from the change of the losses."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtlx._src import checks
from mtlx._src.learned import init_learned, overflow_safe_adam, step_learned
from mtlx._src.methods import loss_scalarization
from mtlx._src.weighting import Stats, WeightingTransformation


def _shifted(losses: jax.Array, min_losses: jax.typing.ArrayLike, epsilon: float) -> jax.Array:
    # A loss below its bound is clamped to it: log and 1/x stay finite (outside jit it raises).
    return jnp.maximum(losses - min_losses, 0.0) + epsilon


def famo_weights(
    logits: jax.Array,
    task_losses: jax.Array,
    min_losses: jax.typing.ArrayLike = 0.0,
    epsilon: float = 1e-8,
) -> jax.Array:
    r"""FAMO weights ``w_t = z_t / (D_t sum_s z_s / D_s)``, ``z = softmax(logits)``, ``D = L-b+e``.

    They are the gradient of :math:`c \sum_t z_t \log D_t` with the normaliser
    :math:`c = (\sum_s z_s / D_s)^{-1}` held constant: a convex combination of the task gradients.

    Args:
      logits: ``(T,)`` task-weighting logits.
      task_losses: ``(T,)`` task losses, above ``min_losses``.
      min_losses: lower bounds ``b`` of the losses (scalar or ``(T,)``).
      epsilon: added to ``L - b`` before dividing.

    Returns:
      ``(T,)`` non-negative weights summing to 1.
    """
    z = jax.nn.softmax(logits)
    inv_shifted = 1.0 / _shifted(task_losses, min_losses, epsilon)
    return z * inv_shifted / jnp.sum(z * inv_shifted)


def famo_logits_gradient(
    logits: jax.Array,
    previous_losses: jax.Array,
    task_losses: jax.Array,
    min_losses: jax.typing.ArrayLike = 0.0,
    epsilon: float = 1e-8,
) -> jax.Array:
    r"""FAMO logits' gradient ``J_softmax(w)^T delta``, ``delta_t = log D_t(prev) - log D_t(now)``.

    ``delta`` is the decrease of each log-loss over the step; a task whose loss fell less than the
    others gets a growing logit.
    """
    delta = jnp.log(_shifted(previous_losses, min_losses, epsilon)) - jnp.log(
        _shifted(task_losses, min_losses, epsilon)
    )
    z = jax.nn.softmax(logits)
    return z * (delta - jnp.dot(z, delta))


class FAMOState(NamedTuple):
    """State of :func:`famo`."""

    logits: jax.Array  # (T,) task-weighting logits w; the weights come from softmax(w)
    logits_opt_state: Any  # state of the Adam (with L2 decay gamma) on the logits
    previous_losses: jax.Array  # (T,) the task losses of the previous update
    has_previous: jax.Array  # bool: previous_losses holds a real step (False before the first)


def famo(
    num_tasks: int,
    min_losses: jax.typing.ArrayLike | None = None,
    gamma: jax.typing.ArrayLike = 1e-3,
    learning_rate: jax.typing.ArrayLike = 0.025,
    epsilon: float = 1e-8,
) -> WeightingTransformation:
    r"""Fast Adaptive Multitask Optimization (FAMO), Liu, Feng, Stone & Liu (NeurIPS 2023).

    FAMO decreases every task loss at about the same rate using the loss values only. The update is
    the gradient of :math:`c \sum_t z_t \log(L_t - b_t + \epsilon)` with
    :math:`z = \mathrm{softmax}(w)` and :math:`c = (\sum_t z_t / (L_t - b_t + \epsilon))^{-1}`
    held constant:

    .. math:: \text{update} = \sum_t \frac{z_t / (L_t - b_t + \epsilon)}
       {\sum_s z_s / (L_s - b_s + \epsilon)} \nabla L_t,

    ONE backward pass with the engine's Jacobian. The logits :math:`w` are learned from how much
    each log-loss decreased: :math:`\delta_t = \log(L_t^{\text{before}} - b_t + \epsilon) -
    \log(L_t^{\text{after}} - b_t + \epsilon)`, one Adam step (``learning_rate``, L2 weight
    decay ``gamma``, PyTorch's ``Adam(weight_decay=gamma)``) along
    :math:`J_{\mathrm{softmax}}(w)^\top \delta`.

    **When the logits are updated.** TorchJD's ``FAMO`` (and the official code) is called on the
    batch's losses for the model step, and then ``update(new_losses)`` with the losses after the
    step. In the optax protocol each update receives one ``task_losses``: mtlx uses them as the
    "after" losses of the previous step, i.e. at update k it first steps the logits with
    :math:`\delta = \log D(L^{k-1}) - \log D(L^k)` (skipped at the first update), then weights
    :math:`L^k`. This is TorchJD's ``forward(L^{k-1}); update(L^k); forward(L^k)`` sequence, with
    the "after" losses measured on the next batch (no extra forward pass, as LibMTL's trainer).

    Args:
      num_tasks: T, the number of logits.
      min_losses: lower bounds ``b`` of the task losses (``(T,)``); ``None`` for 0 (then the losses
        must be positive).
      gamma: L2 weight decay of the logits' Adam (the paper's regularisation). Paper's Algorithm 2,
        LibMTL and TorchJD: 1e-3.
      learning_rate: learning rate of the logits' Adam (the official code's ``w_lr``, TorchJD's
        ``lr``). The paper uses 0.025.
      epsilon: added to ``L - b`` inside the logarithms and divisions.

    Static under ``optax.inject_hyperparams`` (``static_args``): ``num_tasks``; every other
    numeric argument may be injected.

    Returns:
      A transformation from a per-task Jacobian to the update above; it needs ``task_losses=``
      (shape ``(T,)``) at every update. Task-specific leaves are weighted too.

    With ``optax.inject_hyperparams``, declare ``static_args=("num_tasks",)``.

    Properties: weights positive and summing to 1 (a convex combination); the first update weights
      ``1 / (L_t - b_t)`` normalised (the gradient of the mean log-loss, rescaled); stateful.

    References:
      Liu, Feng, Stone & Liu, "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023.
    """
    checks.positive_int("num_tasks", num_tasks)
    checks.nonnegative("gamma", gamma)
    checks.nonnegative("learning_rate", learning_rate)
    if min_losses is None:
        bounds = 0.0
    else:
        bounds = jnp.asarray(min_losses)
        if bounds.shape not in ((), (num_tasks,)):
            raise ValueError(
                f"min_losses must have shape ({num_tasks},) (one bound per task); got "
                f"{bounds.shape}."
            )
    logits_opt = optax.chain(optax.add_decayed_weights(gamma), overflow_safe_adam(learning_rate))

    def init(params) -> FAMOState:
        del params
        zeros = lambda: jnp.zeros((num_tasks,))  # one array per field: steps may donate the state
        return FAMOState(
            *init_learned(logits_opt, zeros()), zeros(), has_previous=jnp.zeros((), bool)
        )

    def weights(stats: Stats, state: FAMOState) -> tuple[jax.Array, FAMOState]:
        losses = stats.losses
        if not checks.is_traced(losses) and np.any(np.asarray(losses - bounds) < 0):
            raise ValueError(
                f"mtlx.famo needs task losses above min_losses (0 by default); got {losses}."
            )
        current = losses.astype(state.logits.dtype)
        gradient = famo_logits_gradient(
            state.logits, state.previous_losses, current, bounds, epsilon
        )
        # The first update has no previous losses: the logits AND the Adam state (its step count,
        # its moments) stay untouched, as TorchJD creates its Adam at the first update.
        logits, opt_state = step_learned(
            logits_opt, state.logits, state.logits_opt_state, gradient, active=state.has_previous
        )
        w = famo_weights(logits, current, bounds, epsilon)
        new_state = FAMOState(
            logits=logits,
            logits_opt_state=opt_state,
            previous_losses=current,
            has_previous=jnp.ones((), bool),
        )
        return w.astype(losses.dtype), new_state

    return loss_scalarization("famo", weights, init=init, num_tasks=num_tasks)
