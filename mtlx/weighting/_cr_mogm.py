"""CR-MOGM: an EMA of any weighting method's task weights (Zhou et al., NeurIPS 2022)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtlx._src.weighting import (
    Stats,
    TaskWeights,
    Weighting,
    WeightingTransformation,
    as_transform,
    weighting_of,
)

PyTree = Any
WrappedWeighting = Weighting | optax.GradientTransformation | Callable[[jax.Array], jax.Array]


def cr_mogm_weights(
    new_weights: jax.Array,
    previous: jax.Array,
    *,
    alpha: jax.typing.ArrayLike = 0.9,
) -> jax.Array:
    r"""Smoothed weights :math:`\lambda_k = \alpha\,\lambda_{k-1} + (1 - \alpha)\,\hat\lambda_k`.

    Args:
      new_weights: :math:`\hat\lambda_k` (T,), the wrapped method's weights at this step.
      previous: :math:`\lambda_{k-1}` (T,).
      alpha: the EMA coefficient on the previous weights, in [0, 1].
    """
    return alpha * previous + (1.0 - alpha) * new_weights


class CRMOGMState(NamedTuple):
    """State of :func:`cr_mogm`."""

    count: jax.Array  # int32 (), number of updates so far
    weights: jax.Array  # (T,) the smoothed weights lambda_{k-1} (initial_weights before step 1)
    inner: Any  # the wrapped weighting's state (optax.EmptyState for a weights function)


def _gramian_function_weighting(fn: Callable[[jax.Array], jax.Array]) -> Weighting:
    """A pure weights function of the Gramian, ``fn(G) -> (T,)``, as a stateless weighting."""

    def weights(stats: Stats, state: optax.EmptyState) -> tuple[jax.Array, optax.EmptyState]:
        w = jnp.asarray(fn(stats.gramian))
        if w.shape != (stats.num_tasks,):
            raise ValueError(
                f"the weights function returned shape {w.shape}; expected ({stats.num_tasks},)."
            )
        return w, state

    return Weighting(getattr(fn, "__name__", "weights function"), weights, reads="gramian")


def cr_mogm(
    weighting: WrappedWeighting,
    num_tasks: int,
    alpha: jax.typing.ArrayLike = 0.9,
    initial_weights: jax.typing.ArrayLike | None = None,
) -> WeightingTransformation:
    r"""CR-MOGM weight smoothing (Zhou et al., "On the Convergence of Stochastic
    Multi-Objective Gradient Manipulation and Beyond", NeurIPS 2022).

    Wraps a weighting method and returns the exponential moving average of its weights, which makes
    stochastic gradient-manipulation methods (MGDA, PCGrad, CAGrad, ...) provably convergent:

    .. math:: \lambda_k = \alpha\,\lambda_{k-1} + (1 - \alpha)\,\hat\lambda_k,
       \qquad \text{update} = \textstyle\sum_t \lambda_{k,t}\, g_t

    where :math:`\hat\lambda_k` are the wrapped method's weights and :math:`\lambda_0` is
    ``initial_weights``, or :math:`\hat\lambda_1` when it is ``None`` (the first update is then the
    wrapped method's). Matches TorchJD 0.18's ``CRMOGMWeighting(weighting, alpha,
    initial_weights)``.

    ``weighting`` is either

    * a pure weights function of the Gramian, ``fn(gramian) -> (T,)``: ``mtlx.mgda_weights``,
      ``mtlx.upgrad_weights``, or ``functools.partial(mtlx.mgda_weights, epsilon=1e-4)``; or
    * an mtlx weighting method, with its hyperparameters and state: ``mtlx.mgda()``,
      ``mtlx.pcgrad(seed=0)``, ``mtlx.modo(3)``, ``mtlx.imtl(3)``, a loss weighting such as
      ``mtlx.uw(3)``, or an :class:`mtlx.Weighting` value. Every Gramian and loss method works:
      their transforms carry their weighting value (``tx.weighting``), whose pure ``weights``
      CR-MOGM composes with its EMA (the wrapped state is kept in :attr:`CRMOGMState.inner`).
      A method whose update is not a combination of the rows (GradDrop, MoCo, ExcessMTL, the
      other row methods) raises a ``ValueError``.

    Example::

      tx = optax.chain(mtlx.cr_mogm(mtlx.mgda_weights, num_tasks=3), optax.adam(1e-3))
      tx = optax.chain(mtlx.cr_mogm(mtlx.pcgrad(seed=0), num_tasks=3, alpha=0.5), optax.sgd(0.1))

    Args:
      weighting: the method whose weights are smoothed (see above).
      num_tasks: T (static), the size of the weights in the state.
      alpha: the EMA coefficient on the previous weights, in [0, 1]; 0 returns the wrapped
        method's weights, 1 freezes them at :math:`\lambda_0`. Corollary 1 of the paper lets it
        grow toward 1 as the learning rate decays: ``alpha`` is traceable, so a schedule works
        through ``optax.inject_hyperparams(mtlx.cr_mogm, static_args=("weighting", "num_tasks"))``.
      initial_weights: :math:`\lambda_0` (T,), or ``None``.

    Static under ``optax.inject_hyperparams`` (``static_args``): ``weighting``, ``num_tasks``;
    every other numeric argument may be injected.

    Returns:
      A transformation from a per-task Jacobian to one update. Task-specific leaves are treated as
      by the wrapped method (their own gradient for a Gramian method).

    Raises:
      ValueError: for ``num_tasks < 1``, ``alpha`` outside [0, 1], ``initial_weights`` of the
        wrong shape, a ``weighting`` that is neither a function nor a transform, a Jacobian whose
        number of tasks differs from ``num_tasks``, or a wrapped method whose update is not a
        weighting of the rows.

    Properties: the first update (with ``initial_weights=None``) is the wrapped method's; constant
    weights are left unchanged; a convex combination of the wrapped method's weights over the
    steps, so weights on the simplex stay there. Stateful: smoothed weights (and the wrapped
    method's state).
    """
    inner = weighting_of(weighting)
    if inner is None:
        if isinstance(weighting, optax.GradientTransformation):
            raise ValueError(
                "cr_mogm smooths task weights, but the wrapped transform is not a weighting "
                "sum_t w_t g_t of the rows (row methods such as GradDrop or MoCo are not): pass a "
                "Gramian or loss method, e.g. mtlx.mgda(), or an mtlx.Weighting."
            )
        if not callable(weighting):
            raise ValueError(
                "weighting must be an mtlx weighting method (e.g. mtlx.mgda()), an mtlx.Weighting, "
                f"or a weights function fn(gramian) -> (T,) weights; got {weighting!r}."
            )
        inner = _gramian_function_weighting(weighting)
    if not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"num_tasks must be a positive int; got {num_tasks!r}.")
    if inner.num_tasks is not None and inner.num_tasks != num_tasks:
        raise ValueError(
            f"cr_mogm(num_tasks={num_tasks}) wraps mtlx.{inner.name} built for "
            f"num_tasks={inner.num_tasks}."
        )
    if not isinstance(alpha, jax.core.Tracer) and not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha!r}.")
    initial = None if initial_weights is None else jnp.asarray(initial_weights)
    if initial is not None and initial.shape != (num_tasks,):
        raise ValueError(
            f"initial_weights must have shape ({num_tasks},); got shape {initial.shape}."
        )
    if initial is not None and not isinstance(initial, jax.core.Tracer):
        if not np.all(np.isfinite(np.asarray(initial))):
            raise ValueError(f"initial_weights must be finite; got {initial}.")

    def init(params: PyTree) -> CRMOGMState:
        dtype = jnp.promote_types(jnp.float32, jnp.result_type(float))
        start = jnp.zeros((num_tasks,), dtype) if initial is None else initial.astype(dtype)
        return CRMOGMState(count=jnp.zeros((), jnp.int32), weights=start, inner=inner.init(params))

    def weights(stats: Stats, state: CRMOGMState) -> tuple[jax.Array | TaskWeights, CRMOGMState]:
        new_weights, inner_state = inner.weights(stats, state.inner)
        heads = None
        if isinstance(new_weights, TaskWeights):
            new_weights, heads = new_weights.shared, new_weights.task_specific
        dtype = state.weights.dtype
        new_weights = jax.lax.stop_gradient(jnp.asarray(new_weights)).astype(dtype)
        previous = state.weights
        if initial is None:
            previous = jnp.where(state.count == 0, new_weights, previous)
        smoothed = cr_mogm_weights(new_weights, previous, alpha=alpha).astype(dtype)
        new_state = CRMOGMState(count=state.count + 1, weights=smoothed, inner=inner_state)
        # Only the task weights are smoothed; heads with weights of their own (IMTL) keep them.
        return (smoothed if heads is None else TaskWeights(smoothed, heads)), new_state

    return as_transform(
        Weighting(
            "cr_mogm",
            weights,
            init=init,
            reads=inner.reads,
            needs_losses=inner.needs_losses,
            task_specific=inner.task_specific,
            num_tasks=num_tasks,
        )
    )
