"""CR-MOGM: an EMA of any weighting method's task weights (Zhou et al., NeurIPS 2022)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtlx._src import builders, jacobians

PyTree = Any
WrappedWeighting = optax.GradientTransformation | Callable[[jax.Array], jax.Array]


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
    inner: Any  # the wrapped transform's state (optax.EmptyState for a weights function)


class _WeightsProbe(jacobians.Jacobian):
    """A Jacobian whose ``combine(w)`` returns ``w``: reads a wrapped transform's weights.

    Every mtlx weighting method ends with ``jac.combine(w)``; handing it this probe instead of the
    Jacobian returns its weights (and its new state) without combining the rows. ``gramian()`` and
    ``rows()`` are those of the real Jacobian, so methods that read either work.
    """

    def __init__(self, jac: jacobians.Jacobian):
        self._jac = jac
        self.num_tasks = jac.num_tasks
        self.shared_mask = jac.shared_mask
        self.treedef = jac.treedef
        self.task_specific: str | None = None

    def rows(self) -> PyTree:
        return self._jac.rows()

    def gramian(self) -> jax.Array:
        return self._jac.gramian()

    def combine(self, weights, task_specific="own"):
        weights = jnp.asarray(weights)
        if weights.shape != (self.num_tasks,):
            raise ValueError(
                f"the wrapped method's weights have shape {weights.shape}; expected "
                f"({self.num_tasks},)."
            )
        self.task_specific = task_specific
        return weights


def cr_mogm(
    weighting: WrappedWeighting,
    num_tasks: int,
    alpha: jax.typing.ArrayLike = 0.9,
    initial_weights: jax.typing.ArrayLike | None = None,
) -> optax.GradientTransformationExtraArgs:
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
    * an mtlx weighting transform, with its hyperparameters and state: ``mtlx.mgda()``,
      ``mtlx.pcgrad(seed=0)``, ``mtlx.modo(3)``, ``mtlx.excess_mtl(3)``, a loss weighting... Any
      method whose update is :math:`\sum_t w_t g_t` works (its state is kept in
      :attr:`CRMOGMState.inner`; ``task_losses`` and ``gramian=`` are passed on to it); one whose
      update is not a combination of the rows (GradDrop, MoCo) raises a ``ValueError``.

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
    is_transform = isinstance(weighting, optax.GradientTransformation)
    if not is_transform and not callable(weighting):
        raise ValueError(
            "weighting must be a weights function fn(gramian) -> (T,) weights (e.g. "
            f"mtlx.mgda_weights) or an mtlx transform (e.g. mtlx.mgda()); got {weighting!r}."
        )
    if not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"num_tasks must be a positive int; got {num_tasks!r}.")
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

    def init_fn(params):
        dtype = jnp.promote_types(jnp.float32, jnp.result_type(float))
        start = jnp.zeros((num_tasks,), dtype) if initial is None else initial.astype(dtype)
        inner = weighting.init(params) if is_transform else optax.EmptyState()
        return CRMOGMState(count=jnp.zeros((), jnp.int32), weights=start, inner=inner)

    def update_fn(updates, state, params=None, *, task_losses=None, gramian=None, **extra_args):
        jac = jacobians.as_jacobian(updates)
        jacobians.check_task_losses(task_losses, jac.num_tasks, required=False, method="cr_mogm")
        builders.check_num_tasks("cr_mogm", num_tasks, jac.num_tasks)
        if is_transform:
            probe = _WeightsProbe(jac)
            if gramian is not None:
                extra_args = {**extra_args, "gramian": gramian}
            new_weights, inner = weighting.update(
                probe, state.inner, params, task_losses=task_losses, **extra_args
            )
            if probe.task_specific is None or not isinstance(new_weights, jax.Array):
                raise ValueError(
                    "cr_mogm smooths task weights, but the wrapped transform's update is not a "
                    "weighting sum_t w_t g_t of the rows (it never combined them with weights)."
                )
            task_specific = probe.task_specific
        else:
            if gramian is None:
                gramian = jac.gramian()
            elif gramian.shape != (num_tasks, num_tasks):
                raise ValueError(
                    f"gramian has shape {gramian.shape}; the Jacobian has {num_tasks} tasks."
                )
            new_weights = jnp.asarray(weighting(gramian))
            if new_weights.shape != (num_tasks,):
                raise ValueError(
                    f"the weights function returned shape {new_weights.shape}; expected "
                    f"({num_tasks},)."
                )
            inner, task_specific = state.inner, "own"
        dtype = state.weights.dtype
        new_weights = jax.lax.stop_gradient(new_weights).astype(dtype)
        previous = state.weights
        if initial is None:
            previous = jnp.where(state.count == 0, new_weights, previous)
        weights = cr_mogm_weights(new_weights, previous, alpha=alpha).astype(dtype)
        new_state = CRMOGMState(count=state.count + 1, weights=weights, inner=inner)
        return jac.combine(weights, task_specific=task_specific), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
