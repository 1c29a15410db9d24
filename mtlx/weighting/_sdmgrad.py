"""SDMGrad: stochastic direction-oriented multi-objective gradient (Xiao et al., NeurIPS 2023)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from optax.projections import projection_simplex

from mtlx._src import checks, solvers, tolerances
from mtlx._src.methods import uniform_weights
from mtlx._src.weighting import Stats, Weighting, WeightingTransformation, as_transform


def sdmgrad_weights(
    gramian: jax.Array,
    inner_weights: jax.Array,
    *,
    lr: jax.typing.ArrayLike = 10.0,
    momentum: jax.typing.ArrayLike = 0.5,
    n_iter: int = 20,
    lambda_: jax.typing.ArrayLike = 0.3,
    pref_vector: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    r"""SDMGrad's weights ``(T,)`` and its new inner weights ``w`` (the state).

    ``A`` is divided by :math:`s^2` with :math:`s` the mean of :math:`\sqrt{\max(A_{tt}, 0)}`
    (scale-free step size), then ``n_iter`` steps of projected SGD with heavy-ball momentum on
    :math:`\tfrac12 \|J^\top (w + \lambda \tilde w)\|^2` over the simplex, started from the
    previous ``w``:

    .. math:: v \leftarrow \mu v + A (w + \lambda \tilde w), \qquad
       w \leftarrow \Pi_\Delta(w - \eta\, v), \qquad
       \text{weights} = \frac{w + \lambda \tilde w}{1 + \lambda}

    Args:
      gramian: ``A = J_1 J_2^T`` (T x T) from two independent mini-batches, or ``J J^T``.
      inner_weights: ``w`` from the previous step (T,), on the simplex.
      lr: :math:`\eta`, the inner SGD step size.
      momentum: :math:`\mu \in [0, 1)`, the inner SGD momentum (restarted at each call).
      n_iter: number of inner SGD steps (static): the method's fixed schedule, not a
        convergence tolerance, so the loop has no early exit.
      lambda_: :math:`\lambda \ge 0`, the pull toward the preference direction.
      pref_vector: :math:`\tilde w` (T,); ``None`` for uniform :math:`1/T` (the mean gradient).

    Returns:
      ``(weights, new_inner_weights)``; the update is ``sum_t weights[t] g_t``.
    """
    num_tasks = gramian.shape[0]
    dtype = jnp.promote_types(inner_weights.dtype, gramian.dtype)
    a = gramian.astype(dtype)
    w = inner_weights.astype(dtype)
    if pref_vector is None:
        pref = jnp.full((num_tasks,), 1.0 / num_tasks, dtype)
    else:
        pref = jnp.asarray(pref_vector, dtype)
    scale = jnp.mean(jnp.sqrt(jnp.maximum(jnp.diagonal(a), 0.0)))
    a = a / (scale**2 + tolerances.REFERENCE_EPS)  # the guard of TorchJD, LibMTL, the official code

    def step(carry):
        w, velocity = carry
        grad = a @ (w + lambda_ * pref)
        velocity = momentum * velocity + grad  # from 0: torch.optim.SGD's first buffer is grad
        return (projection_simplex(w - lr * velocity).astype(dtype), velocity), False

    w, _ = solvers.bounded_while_loop(step, (w, jnp.zeros_like(w)), n_iter)
    return (w + lambda_ * pref) / (1.0 + lambda_), w


class SDMGradState(NamedTuple):
    """State of :func:`sdmgrad`."""

    inner_weights: jax.Array  # (T,) the inner solver's w on the simplex: the next call's start


def sdmgrad(
    num_tasks: int,
    learning_rate: jax.typing.ArrayLike = 10.0,
    momentum: jax.typing.ArrayLike = 0.5,
    max_iters: int = 20,
    lambda_: jax.typing.ArrayLike = 0.3,
    pref_vector: jax.typing.ArrayLike | None = None,
) -> WeightingTransformation:
    r"""SDMGrad (Xiao, Ban & Ji, "Direction-oriented Multi-objective Learning: Simple and Provable
    Stochastic Algorithms", NeurIPS 2023).

    A direction-oriented MGDA: the update stays close to the preference direction
    :math:`J^\top \tilde w` (the mean gradient by default) while improving every task. Its weights
    solve :math:`\min_{w \in \Delta} \tfrac12\|J^\top(w + \lambda\tilde w)\|^2` approximately, by
    ``max_iters`` steps of projected SGD with momentum warm-started from the previous step's ``w``:

    .. math:: \text{update} = \frac{J^\top (w^* + \lambda \tilde w)}{1 + \lambda}

    Matches TorchJD 0.18's ``SDMGradWeighting(lr, momentum, n_iter, lambda_, pref_vector)``, whose
    ``lr`` and ``n_iter`` are ``learning_rate`` and ``max_iters`` here.

    **Double sampling in mtlx.** The paper estimates the matrix from two independent batches
    (:math:`\xi, \xi'`) and the update from a third (:math:`\zeta`)::

      updates, state = tx.update(jac_zeta, state, params,
                                 gramian=mtlx.cross_gramian(jac_xi, jac_xi_prime))

    Without ``gramian=``, :math:`J J^\top` of the given Jacobian is used (one batch).

    Args:
      num_tasks: T (static), the size of ``w`` in the state.
      learning_rate: inner SGD step size :math:`\eta`, positive (TorchJD's ``lr``, 10; the official
        code uses 5 in LibMTL).
      momentum: inner SGD momentum, in [0, 1).
      max_iters: number of inner SGD steps per update (static), positive (TorchJD's ``n_iter``):
        a fixed schedule, without early exit.
      lambda_: non-negative pull toward the preference direction (0.3, the authors' setting).
      pref_vector: :math:`\tilde w` (T,); ``None`` for :math:`1/T`.

    Static under ``optax.inject_hyperparams`` (``static_args``): ``num_tasks``, ``max_iters``;
    every other numeric argument may be injected.

    Returns:
      A transformation from a per-task Jacobian to one update; accepts ``gramian=`` (any T x T
      matrix, not necessarily symmetric); ``task_losses`` is optional.

    Raises:
      ValueError: for invalid hyperparameters, or a Jacobian whose number of tasks differs from
        ``num_tasks`` (or from ``pref_vector``'s length).

    Properties: weights sum to 1 (convex combination of the rows for a non-negative preference);
    permutation-invariant with the default preference; positively homogeneous up to the
    :math:`10^{-8}` guard of the scale normalisation. Stateful: ``w``.
    """
    checks.positive_int("num_tasks", num_tasks)
    checks.positive("learning_rate", learning_rate)
    checks.in_unit_interval("momentum", momentum, include_one=False)
    checks.positive_int("max_iters", max_iters)
    checks.nonnegative("lambda_", lambda_)
    pref = None if pref_vector is None else jnp.asarray(pref_vector)
    if pref is not None and pref.shape != (num_tasks,):
        raise ValueError(f"pref_vector must have shape ({num_tasks},); got shape {pref.shape}.")

    def init(params) -> SDMGradState:
        del params
        return SDMGradState(inner_weights=uniform_weights(num_tasks))

    def weights(stats: Stats, state: SDMGradState) -> tuple[jax.Array, SDMGradState]:
        w, inner = sdmgrad_weights(
            jax.lax.stop_gradient(stats.gramian),
            state.inner_weights,
            lr=learning_rate,
            momentum=momentum,
            n_iter=max_iters,
            lambda_=lambda_,
            pref_vector=pref,
        )
        return w, SDMGradState(inner_weights=inner.astype(state.inner_weights.dtype))

    return as_transform(
        Weighting("sdmgrad", weights, init=init, reads="gramian", num_tasks=num_tasks)
    )
