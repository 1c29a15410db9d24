"""PCD: priority-constrained descent (a primary objective, guaranteed progress for the others)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from mtlx._src import checks, linalg, solvers, tolerances
from mtlx._src.jacobians import scale_gramian
from mtlx._src.methods import state_dtype
from mtlx._src.weighting import Stats, Weighting, WeightingTransformation, as_transform


def _solve_pcd_qp(gramian: jax.Array, taus: jax.Array, max_iters: int | None) -> jax.Array:
    r"""Weights ``[1, mu]`` of the solution ``d = g_1 + sum_j mu_j g_j`` of PCD's QP (see pcd).

    The dual of :math:`\min_d \frac12 \|d - g_1\|^2` s.t. :math:`g_j^\top d \ge \tau_j \|g_j\|^2`
    is :math:`\min_{\mu \ge 0} \frac12 \mu^\top G_s \mu - b^\top \mu` with
    :math:`b_j = \tau_j G_{jj} - G_{j1}`, solved by the active-set QP of :mod:`mtlx._src.solvers`
    on :math:`G_s + \delta I` (:math:`\delta` at the square root of the dtype's precision,
    relative to the largest diagonal entry). The constraints are infeasible iff the dual is
    unbounded; then the regularized multipliers grow like :math:`1/\delta` and some constraint
    stays violated by much more than :math:`\delta \mu`: the result is ``[1, 0, ..., 0]``, as
    TorchJD.
    """
    num_tasks = gramian.shape[0]
    dtype = gramian.dtype
    if num_tasks == 1:
        return jnp.ones((1,), dtype)
    secondary = gramian[1:, 1:]
    b = taus * jnp.diagonal(secondary) - gramian[1:, 0]
    top = jnp.maximum(jnp.max(jnp.diagonal(gramian)), jnp.finfo(dtype).tiny)
    sqrt_eps = tolerances.eps(dtype) ** 0.5
    delta = sqrt_eps * top
    mu = solvers.nonnegative_qp(
        secondary + delta * jnp.eye(num_tasks - 1, dtype=dtype), -b, max_iters=max_iters
    )
    slacks = secondary @ mu - b
    # Feasible: every slack >= -delta mu_j (the regularized KKT conditions). Infeasible: a slack of
    # the order of b stays.
    tolerance = 2.0 * delta * mu + sqrt_eps * jnp.sqrt(delta * top)
    feasible = jnp.all(slacks >= -tolerance)
    mu = jnp.where(feasible, mu, 0.0)
    return jnp.concatenate([jnp.ones((1,), dtype), mu])


def pcd_weights(
    gramian: jax.Array,
    scales: jax.Array,
    taus: jax.typing.ArrayLike = 0.02,
    *,
    max_iters: int | None = None,
) -> jax.Array:
    r"""PCD weights ``w`` (T,) for the Gramian and the per-task normalizing ``scales``.

    Solves the QP of :func:`pcd` on the normalized Gramian
    :math:`\tilde G = \mathrm{diag}(s)\, G\, \mathrm{diag}(s)` and rescales the direction to the
    norm of :math:`g_1`. Zero when :math:`g_1 = 0` or when the direction vanishes up to the
    rounding of ``G``.

    Args:
      gramian: ``(T, T)`` Gramian; row/column 0 is the primary objective.
      scales: ``(T,)`` scales :math:`s_t` of the rows (:func:`pcd` keeps them as a moving average).
      taus: fraction of progress guaranteed to each secondary objective: a scalar or ``(T - 1,)``.
      max_iters: bound on the active-set iterations (None: 4 T + 8).
    """
    dtype = gramian.dtype
    num_tasks = gramian.shape[0]
    taus = jnp.broadcast_to(jnp.asarray(taus, dtype), (num_tasks - 1,))
    sq_norms = jnp.diagonal(gramian)
    normalized = scale_gramian(gramian, scales)
    w = _solve_pcd_qp(normalized, taus, max_iters)
    direction_sq_norm = w @ normalized @ w
    # The rounding error of ||d||^2 computed from the Gramian is of the order of this magnitude.
    magnitude = (jnp.abs(w) @ jnp.sqrt(jnp.maximum(jnp.diagonal(normalized), 0.0))) ** 2
    precision = 10.0 * tolerances.eps(dtype)
    ok = (sq_norms[0] > 0) & (direction_sq_norm > precision * magnitude)
    rescale = jnp.sqrt(linalg.safe_divide(sq_norms[0], direction_sq_norm))
    return jnp.where(ok, w * scales * rescale, 0.0)


class PCDState(NamedTuple):
    """State of :func:`pcd`."""

    sq_norm_ema: jax.Array  # (T,) moving average of the squared row norms (not debiased)
    count: jax.Array  # int32 number of finite updates so far, for the debiasing


def pcd(
    num_tasks: int,
    tau: jax.typing.ArrayLike = 0.02,
    beta: float = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    max_iters: int | None = None,
) -> WeightingTransformation:
    r"""Priority-constrained descent (PCD), Varam et al. (TMLR 2026), as TorchJD's ``PCD``.

    Task 0 is the primary objective. With :math:`\tilde g_t = s_t g_t` the normalized rows
    (:math:`s_t = 1 / \sqrt{\hat v_t + \epsilon}`, :math:`\hat v_t` the debiased moving average of
    :math:`\|g_t\|^2` with decay :math:`\beta`),

    .. math:: \tilde d = \arg\min_d \tfrac12 \|d - \tilde g_1\|^2 \quad \text{s.t.} \quad
       \tilde g_j^\top d \ge \tau_j \|\tilde g_j\|^2, \ j = 2, \dots, T,

    and the update is :math:`\tilde d` rescaled to the norm of :math:`g_1`. The QP is solved
    through its dual on the T x T Gramian (non-negative QP, active set, bounded iterations).

    Args:
      num_tasks: T, the size of the moving average in the state (static).
      tau: fraction in [0, 1] of normalized first-order progress guaranteed to each secondary
        objective; a scalar or a ``(T - 1,)`` vector.
      beta: decay in [0, 1) of the moving average of the squared norms.
      eps: non-negative constant added to the moving average before its inverse square root.
      max_iters: bound on the active-set iterations of the QP solver (static).

    Static under ``optax.inject_hyperparams`` (``static_args``): ``num_tasks``; every other
    numeric argument may be injected.

    Returns:
      A transformation from a per-task Jacobian to one update. Accepts ``gramian=``;
      ``task_losses`` is optional.

    Raises:
      ValueError: for ``num_tasks < 1``, ``tau`` outside [0, 1] or of the wrong length, ``beta``
        outside [0, 1), a negative ``eps``, or a Jacobian whose number of tasks is not
        ``num_tasks``.

    Properties: positively homogeneous (up to ``eps``), zero when :math:`g_1 = 0`, equal to
    :math:`g_1` when the constraints already hold at :math:`\tilde g_1` or cannot all hold
    together; not symmetric in the tasks. Each secondary task gets
    :math:`\tilde g_j^\top \tilde d \ge \tau_j \|\tilde g_j\|^2`. Stateful: the moving average.

    .. note::
      TorchJD solves the QP exactly by Goldfarb-Idnani on the primal; mtlx solves its dual with a
      tiny ridge (square root of the dtype's precision, relative): the same direction, with
      multipliers split evenly, rather than arbitrarily, among duplicate secondary rows. A
      Jacobian with non-finite entries gives a NaN update and leaves the moving average unchanged,
      as TorchJD.

    References:
      Varam et al., "Not All Objectives Are Born Equal: Priority-Constrained Descent for
      Hierarchical Multi-Objective Optimization", TMLR 2026.
    """
    checks.positive_int("num_tasks", num_tasks)
    tau_array = jnp.asarray(tau)
    if tau_array.ndim > 1:
        raise ValueError(
            f"tau must be a scalar or a vector of shape (T - 1,); got shape {tau_array.shape}."
        )
    if tau_array.ndim == 1 and tau_array.shape[0] != num_tasks - 1:
        raise ValueError(
            f"tau has {tau_array.shape[0]} entries; it needs one per secondary task "
            f"(num_tasks - 1 = {num_tasks - 1})."
        )
    checks.in_unit_interval("tau", tau)
    checks.in_unit_interval("beta", beta, include_one=False)
    checks.nonnegative("eps", eps)

    def init(params) -> PCDState:
        del params
        zeros = jnp.zeros((num_tasks,), state_dtype())
        return PCDState(sq_norm_ema=zeros, count=jnp.zeros((), jnp.int32))

    def weights(stats: Stats, state: PCDState) -> tuple[jax.Array, PCDState]:
        gramian = stats.gramian
        dtype = gramian.dtype
        finite = jnp.all(jnp.isfinite(gramian))
        sq_norms = jnp.where(finite, jnp.diagonal(gramian), 0.0)
        beta_ = jnp.asarray(beta, dtype)
        ema = beta_ * state.sq_norm_ema.astype(dtype) + (1.0 - beta_) * sq_norms
        count = state.count + 1
        debiased = ema / (1.0 - beta_ ** count.astype(dtype))
        # A zero average means the row has always been zero: its scale does not matter, and 0
        # avoids dividing by zero when eps = 0.
        scales = linalg.safe_divide(1.0, jnp.sqrt(debiased + jnp.asarray(eps, dtype)))
        w = pcd_weights(gramian, scales, tau_array.astype(dtype), max_iters=max_iters)
        new_state = PCDState(
            sq_norm_ema=jnp.where(finite, ema, state.sq_norm_ema).astype(state.sq_norm_ema.dtype),
            count=jnp.where(finite, count, state.count),
        )
        return jnp.where(finite, w, jnp.nan), new_state

    return as_transform(Weighting("pcd", weights, init=init, reads="gramian", num_tasks=num_tasks))
