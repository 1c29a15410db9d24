"""SDMGrad: stochastic direction-oriented multi-objective gradient (Xiao et al., NeurIPS 2023)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtlx._src import builders, solvers

# Guard of the scale normalisation, as in TorchJD, LibMTL and the official code.
_SCALE_EPS = 1e-8


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
        convergence tolerance, so it is a ``fori_loop`` without early exit.
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
    a = a / (scale**2 + _SCALE_EPS)

    def step(_, carry):
        w, velocity = carry
        grad = a @ (w + lambda_ * pref)
        velocity = momentum * velocity + grad  # from 0: torch.optim.SGD's first buffer is grad
        return solvers.project_to_simplex(w - lr * velocity), velocity

    w, _ = jax.lax.fori_loop(0, n_iter, step, (w, jnp.zeros_like(w)))
    return (w + lambda_ * pref) / (1.0 + lambda_), w


class SDMGradState(NamedTuple):
    """State of :func:`sdmgrad`."""

    inner_weights: jax.Array  # (T,) the inner solver's w on the simplex: the next call's start


def sdmgrad(
    num_tasks: int,
    lr: jax.typing.ArrayLike = 10.0,
    momentum: jax.typing.ArrayLike = 0.5,
    n_iter: int = 20,
    lambda_: jax.typing.ArrayLike = 0.3,
    pref_vector: jax.typing.ArrayLike | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""SDMGrad (Xiao, Ban & Ji, "Direction-oriented Multi-objective Learning: Simple and Provable
    Stochastic Algorithms", NeurIPS 2023).

    A direction-oriented MGDA: the update stays close to the preference direction
    :math:`J^\top \tilde w` (the mean gradient by default) while improving every task. Its weights
    solve :math:`\min_{w \in \Delta} \tfrac12\|J^\top(w + \lambda\tilde w)\|^2` approximately, by
    ``n_iter`` steps of projected SGD with momentum warm-started from the previous step's ``w``:

    .. math:: \text{update} = \frac{J^\top (w^* + \lambda \tilde w)}{1 + \lambda}

    Matches TorchJD 0.18's ``SDMGradWeighting(lr, momentum, n_iter, lambda_, pref_vector)``.

    **Double sampling in mtlx.** The paper estimates the matrix from two independent batches
    (:math:`\xi, \xi'`) and the update from a third (:math:`\zeta`)::

      updates, state = tx.update(jac_zeta, state, params,
                                 gramian=mtlx.cross_gramian(jac_xi, jac_xi_prime))

    Without ``gramian=``, :math:`J J^\top` of the given Jacobian is used (one batch).

    Args:
      num_tasks: T (static), the size of ``w`` in the state.
      lr: inner SGD step size, positive (TorchJD's 10; the official code uses 5 in LibMTL).
      momentum: inner SGD momentum, in [0, 1).
      n_iter: number of inner SGD steps per update (static), positive.
      lambda_: non-negative pull toward the preference direction (0.3, the authors' setting).
      pref_vector: :math:`\tilde w` (T,); ``None`` for :math:`1/T`.

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
    if not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"num_tasks must be a positive int; got {num_tasks!r}.")
    if not isinstance(lr, jax.core.Tracer) and not float(lr) > 0.0:
        raise ValueError(f"lr must be positive; got {lr!r}.")
    if not isinstance(momentum, jax.core.Tracer) and not 0.0 <= float(momentum) < 1.0:
        raise ValueError(f"momentum must be in [0, 1); got {momentum!r}.")
    if not isinstance(n_iter, int) or n_iter < 1:
        raise ValueError(f"n_iter must be a positive int; got {n_iter!r}.")
    if not isinstance(lambda_, jax.core.Tracer) and not float(lambda_) >= 0.0:
        raise ValueError(f"lambda_ must be non-negative; got {lambda_!r}.")
    pref = None if pref_vector is None else jnp.asarray(pref_vector)
    if pref is not None and pref.shape != (num_tasks,):
        raise ValueError(f"pref_vector must have shape ({num_tasks},); got shape {pref.shape}.")

    def init_fn(params):
        del params
        dtype = jnp.promote_types(jnp.float32, jnp.result_type(float))
        return SDMGradState(inner_weights=jnp.full((num_tasks,), 1.0 / num_tasks, dtype))

    def weights_fn(gramian, losses, state):
        del losses
        builders.check_num_tasks("sdmgrad", num_tasks, gramian.shape[0])
        weights, inner = sdmgrad_weights(
            jax.lax.stop_gradient(gramian),
            state.inner_weights,
            lr=lr,
            momentum=momentum,
            n_iter=n_iter,
            lambda_=lambda_,
            pref_vector=pref,
        )
        return weights, SDMGradState(inner_weights=inner.astype(state.inner_weights.dtype))

    return builders.gramian_weighting(weights_fn, name="sdmgrad", init_fn=init_fn)
