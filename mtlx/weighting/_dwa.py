"""DWA: dynamic weight average, weights from the losses' rate of change."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtlx._src import checks, linalg
from mtlx._src.methods import loss_scalarization
from mtlx._src.weighting import Stats, WeightingTransformation


def dwa_weights(
    older_losses: jax.Array, newer_losses: jax.Array, temperature: jax.typing.ArrayLike = 2.0
) -> jax.Array:
    r"""DWA weights ``w = T softmax(r / temperature)`` with ``r_t = newer_t / older_t``.

    Args:
      older_losses: ``(T,)`` average losses of the epoch before last, :math:`L(t - 2)`.
      newer_losses: ``(T,)`` average losses of the last epoch, :math:`L(t - 1)`.
      temperature: the softmax temperature (larger: more uniform weights).

    Returns:
      ``(T,)`` non-negative weights summing to T. A task whose older loss is 0 gets the rate 0
      (a finite weight, not a NaN).
    """
    rates = linalg.safe_divide(newer_losses, older_losses)
    return newer_losses.shape[0] * jax.nn.softmax(rates / temperature)


class DWAState(NamedTuple):
    """State of :func:`dwa`."""

    loss_sum: jax.Array  # (T,) sum of this epoch's task losses so far
    epoch_steps: jax.Array  # int32: steps taken in the current epoch
    previous_averages: jax.Array  # (2, T) average losses of the last two epochs, newest last
    num_epochs: jax.Array  # int32: finished epochs, capped at 2 (only "fewer than two?" matters)


def dwa(
    num_tasks: int, temperature: jax.typing.ArrayLike = 2.0, steps_per_epoch: int = 1
) -> WeightingTransformation:
    r"""Dynamic Weight Average (DWA), Liu, Johns & Davison (CVPR 2019).

    .. math::
       w_t(k) = \frac{T \exp(r_t(k-1) / \tau)}{\sum_s \exp(r_s(k-1) / \tau)}, \qquad
       r_t(k-1) = \frac{L_t(k-1)}{L_t(k-2)}

    where :math:`L_t(k)` is task t's loss averaged over epoch k and :math:`\tau` the temperature.
    The update is :math:`\sum_t w_t \nabla L_t`: ONE backward pass with the engine's Jacobian.
    During the first two epochs, before two averages exist, the weights are 1 (as LibMTL and
    TorchJD).

    An "epoch" is ``steps_per_epoch`` consecutive updates: the state sums the ``task_losses`` it is
    given and rolls the average at the end of each epoch, as TorchJD's ``DWA.step()`` does once an
    epoch. ``steps_per_epoch=1`` (the default) rolls after every update, so the weights follow the
    per-step loss ratio; set it to the number of batches per epoch to reproduce the paper.

    Args:
      num_tasks: T, the size of the loss history in the state.
      temperature: :math:`\tau > 0`; larger gives more uniform weights. The paper uses 2.
      steps_per_epoch: updates per epoch (a positive int).

    Static under ``optax.inject_hyperparams`` (``static_args``): ``num_tasks``,
    ``steps_per_epoch``; every other numeric argument may be injected.

    Returns:
      A transformation from a per-task Jacobian to :math:`\sum_t w_t \nabla L_t`; it needs
      ``task_losses=`` (shape ``(T,)``) at every update. Task-specific leaves are weighted too, as
      backpropagating :math:`\sum_t w_t L_t` does.

    With ``optax.inject_hyperparams``, declare ``static_args=("num_tasks", "steps_per_epoch")``.

    Properties: weights positive and summing to T; equal weights for two epochs; invariant to a
      per-task rescaling of the losses (only ratios of each task's own losses enter); stateful.

    .. note::
       The losses should keep one sign and stay away from zero: the rate of a task whose older
       average loss is 0 is taken as 0 instead of dividing by zero. A step whose losses are not
       all finite is left out of the history (its weights are still the history's).

    References:
      Liu, Johns & Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019.
    """
    checks.positive_int("num_tasks", num_tasks)
    checks.positive_int("steps_per_epoch", steps_per_epoch)
    checks.positive("temperature", temperature)

    def init(params) -> DWAState:
        del params
        zeros = jnp.zeros((num_tasks,))
        return DWAState(
            loss_sum=zeros,
            epoch_steps=jnp.zeros((), jnp.int32),
            previous_averages=jnp.stack([zeros, zeros]),
            num_epochs=jnp.zeros((), jnp.int32),
        )

    def weights(stats: Stats, state: DWAState) -> tuple[jax.Array, DWAState]:
        losses = stats.losses
        older, newer = state.previous_averages
        w = jnp.where(
            state.num_epochs >= 2, dwa_weights(older, newer, temperature), jnp.ones_like(newer)
        )
        loss_sum = state.loss_sum + losses.astype(state.loss_sum.dtype)
        epoch_steps = state.epoch_steps + 1
        end_of_epoch = epoch_steps >= steps_per_epoch
        average = loss_sum / epoch_steps.astype(loss_sum.dtype)
        rolled = jnp.stack([newer, average])
        new_state = DWAState(
            loss_sum=jnp.where(end_of_epoch, jnp.zeros_like(loss_sum), loss_sum),
            epoch_steps=jnp.where(end_of_epoch, 0, epoch_steps).astype(jnp.int32),
            previous_averages=jnp.where(end_of_epoch, rolled, state.previous_averages),
            num_epochs=jnp.minimum(state.num_epochs + end_of_epoch.astype(jnp.int32), 2),
        )
        # A non-finite loss never enters the history: it would poison every later weight. The
        # step is left out of the epoch's average (the state stays as it was).
        finite = jnp.all(jnp.isfinite(losses))
        new_state = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new_state, state)
        return w.astype(losses.dtype), new_state

    return loss_scalarization("dwa", weights, init=init, num_tasks=num_tasks)
