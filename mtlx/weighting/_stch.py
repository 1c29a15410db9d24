"""STCH: smooth Tchebycheff scalarization of the task losses."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mtlx._src import checks
from mtlx._src.methods import loss_scalarization, preference_weighting
from mtlx._src.tolerances import LOG_EPS
from mtlx._src.weighting import Stats, WeightingTransformation, as_pref_vector, check_pref_vector


def stch_weights(
    values: jax.Array,
    mu: jax.typing.ArrayLike = 1.0,
    pref_vector: jax.Array | None = None,
    reference: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    r"""Gradient of :math:`\mu \log \sum_t \exp(\lambda_t (f_t - z^*_t) / \mu)` in ``values`` ``f``.

    ``w = lambda * softmax(lambda (f - z*) / mu)``: a softmax-weighted preference, approaching the
    indicator of the worst weighted objective as :math:`\mu \to 0` (Tchebycheff) and
    :math:`\lambda / T` as :math:`\mu \to \infty`.

    Args:
      values: ``(T,)`` objectives ``f`` (the task losses, or their normalised logarithms).
      mu: smoothing parameter :math:`\mu > 0`.
      pref_vector: ``(T,)`` preference :math:`\lambda`; ``None`` for uniform ``1/T``.
      reference: ideal point :math:`z^*` (scalar or ``(T,)``); ``None`` for 0.

    Returns:
      ``(T,)`` non-negative weights, a convex combination of the preferences (``1/T`` each by
      default, so they sum to ``1/T``: TorchJD's scale).
    """
    num_tasks = values.shape[0]
    if pref_vector is None:
        pref_vector = jnp.full((num_tasks,), 1.0 / num_tasks, values.dtype)
    shifted = values if reference is None else values - reference
    # softmax subtracts the max, as the paper's Appendix B.1 recommends: no overflow for small mu.
    return pref_vector * jax.nn.softmax(pref_vector * shifted / mu)


class STCHState(NamedTuple):
    """State of :func:`stch` with a warm-up (``warmup_steps > 0``)."""

    count: jax.Array  # int32: updates taken so far (capped at warmup_steps)
    loss_sum: jax.Array  # (T,) sum of the losses over the warm-up's last nadir_steps updates


def stch(
    mu: jax.typing.ArrayLike = 1.0,
    pref_vector: jax.typing.ArrayLike | None = None,
    reference: jax.typing.ArrayLike | None = None,
    *,
    warmup_steps: int = 0,
    nadir_steps: int | None = None,
    num_tasks: int | None = None,
) -> WeightingTransformation:
    r"""Smooth Tchebycheff scalarization (STCH), Lin et al. (ICML 2024).

    The model minimises the smooth maximum of the weighted task losses,

    .. math:: \mu \log \sum_t \exp\big(\lambda_t (L_t - z^*_t) / \mu\big), \qquad
       \text{update} = \sum_t \lambda_t\, \mathrm{softmax}\big(\lambda (L - z^*) / \mu\big)_t
       \nabla L_t,

    ONE backward pass with the engine's Jacobian. With the defaults this is TorchJD's
    ``scalarization.STCH(mu)`` (uniform preference :math:`\lambda_t = 1/T`, no reference point).

    **Warm-up and nadir point** (``warmup_steps > 0``): the recipe of the paper's multi-task
    experiments (official ``STCH_MTL`` code, LibMTL's ``STCH``). For the first ``warmup_steps``
    updates the update is the gradient of :math:`\sum_t \log L_t` (weights :math:`1 / L_t`), and the
    losses of the last ``nadir_steps`` of them are averaged into a nadir point :math:`n`. Afterwards
    STCH runs on the normalised log-losses :math:`f_t = \log(L_t / n_t)` (``reference`` is then
    not allowed): weights :math:`\lambda_t \mathrm{softmax}(\lambda f / \mu)_t / L_t`.

    Args:
      mu: smoothing :math:`\mu > 0`; smaller is closer to the (non-smooth) maximum. LibMTL's
        default, 1.0; the paper evaluates 0.01 to 1.
      pref_vector: ``(T,)`` preference :math:`\lambda` (on the simplex in the paper); ``None`` for
        ``1/T``.
      reference: the ideal point :math:`z^*` subtracted from the losses; ``None`` for 0.
      warmup_steps: updates of log-loss warm-up before STCH; 0 (default) for none.
      nadir_steps: how many of the last warm-up updates are averaged into the nadir point;
        ``None`` for all of them.
      num_tasks: T; needed only with a warm-up (the state holds a ``(T,)`` loss sum) when
        ``pref_vector`` is not given.

    Static under ``optax.inject_hyperparams`` (``static_args``): ``num_tasks``,
    ``warmup_steps``; every other numeric argument may be injected.

    Returns:
      A transformation from a per-task Jacobian to the update above; it needs ``task_losses=``.
      Task-specific leaves are weighted too.

    Raises:
      ValueError: with a warm-up, concrete (not traced) losses that are not all positive: the
        warm-up and the normalised objective take :math:`\log L_t`, whose gradient
        :math:`1 / L_t` is infinite at 0 (inside ``jit`` such losses give non-finite updates).

    With ``optax.inject_hyperparams``, declare
    ``static_args=("warmup_steps", "nadir_steps", "num_tasks")``.

    Properties: without warm-up the weights are non-negative with
      :math:`\min_t \lambda_t \le \sum_t w_t \le \max_t \lambda_t` (``1/T`` by default);
      permutation-invariant with the uniform preference; stateless without warm-up.

    .. note::
       LibMTL scales its STCH loss by T and uses :math:`\lambda = 1`: its update is T times that of
       ``stch(mu, pref_vector=jnp.ones(T), warmup_steps=(E + 1) * S, nadir_steps=S)`` with
       LibMTL's ``STCH_warmup_epoch`` E and S steps per epoch (LibMTL averages the nadir point over
       its last warm-up epoch only). The factor T does not matter under Adam.

    References:
      Lin, Zhang, Yang, Liu, Wang & Zhang, "Smooth Tchebycheff Scalarization for Multi-Objective
      Optimization", ICML 2024.
    """
    checks.positive("mu", mu)
    checks.nonnegative_int("warmup_steps", warmup_steps)
    if nadir_steps is None:
        nadir_steps = warmup_steps
    in_range = 0 < nadir_steps <= warmup_steps or warmup_steps == 0
    if not isinstance(nadir_steps, int) or not in_range:
        raise ValueError(
            f"nadir_steps must be an int in [1, warmup_steps={warmup_steps}]; got {nadir_steps!r}."
        )
    pref = as_pref_vector(pref_vector)
    if pref is not None and num_tasks is not None and pref.shape[0] != num_tasks:
        raise ValueError(f"pref_vector has {pref.shape[0]} entries but num_tasks={num_tasks}.")
    if warmup_steps and reference is not None:
        raise ValueError(
            "stch with warmup_steps > 0 normalises the losses by the nadir point: it takes no "
            "reference point."
        )
    if not warmup_steps:
        return preference_weighting(
            "stch",
            lambda stats, pref: stch_weights(stats.losses, mu, pref, reference),
            pref,
            reads="losses",
        )
    if num_tasks is None:
        if pref is None:
            raise ValueError("stch with warmup_steps > 0 needs num_tasks (or pref_vector).")
        num_tasks = pref.shape[0]

    def init(params) -> STCHState:
        del params
        return STCHState(count=jnp.zeros((), jnp.int32), loss_sum=jnp.zeros((num_tasks,)))

    def weights(stats: Stats, state: STCHState) -> tuple[jax.Array, STCHState]:
        losses = stats.losses
        check_pref_vector(pref, stats.num_tasks)
        if not checks.is_traced(losses) and np.any(np.asarray(losses) <= 0):
            # log L_t and its gradient 1 / L_t: a zero loss gives an infinite weight (in
            # LibMTL's and the official code too, behind their 1e-20), a negative one a NaN.
            raise ValueError(
                f"stch with a warm-up takes logarithms of the losses: losses must be > 0; got "
                f"{losses}. Use warmup_steps=0 (TorchJD's STCH) for losses that reach 0."
            )
        warming_up = state.count < warmup_steps
        # 1 / L_t is the gradient of log(L_t + 1e-20), LibMTL's warm-up loss.
        warmup_weights = 1.0 / (losses + LOG_EPS)
        nadir = jnp.maximum(state.loss_sum / nadir_steps, LOG_EPS).astype(losses.dtype)
        log_losses = jnp.log(losses / nadir + LOG_EPS)
        # d/dL log(L / n + eps) = 1 / (L + eps n)
        stch_w = stch_weights(log_losses, mu, pref) / (losses + LOG_EPS * nadir)
        w = jnp.where(warming_up, warmup_weights, stch_w)
        in_nadir_window = warming_up & (state.count >= warmup_steps - nadir_steps)
        loss_sum = state.loss_sum + jnp.where(in_nadir_window, losses, 0.0).astype(
            state.loss_sum.dtype
        )
        count = jnp.minimum(state.count + 1, warmup_steps).astype(jnp.int32)
        return w, STCHState(count=count, loss_sum=loss_sum)

    return loss_scalarization("stch", weights, init=init, num_tasks=num_tasks)
