"""MoCo: multi-objective gradient correction with tracked gradients (Fernando et al., ICLR 2023)."""

from __future__ import annotations

import functools
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax
from optax.projections import projection_simplex

from mtlx._src import checks
from mtlx._src.jacobians import leaf_gramian, weighted_sum
from mtlx._src.methods import uniform_weights
from mtlx._src.rows import check_per_task, per_task_zeros, row_norms, scale_rows, with_heads
from mtlx._src.tolerances import REFERENCE_EPS
from mtlx._src.weighting import Rows, rows_transform

PyTree = Any
LambdaUpdate = Literal["softmax", "projection"]


def moco_weights(
    tracked_gramian: jax.Array,
    weights: jax.Array,
    *,
    step_size: jax.typing.ArrayLike,
    rho: jax.typing.ArrayLike = 0.0,
    lambda_update: LambdaUpdate = "softmax",
    gramian_scale: jax.typing.ArrayLike = 1.0,
) -> jax.Array:
    r"""One MoCo weight step, :math:`P(\lambda - \gamma_k (Y Y^\top + \rho I)\lambda)`.

    Args:
      tracked_gramian: :math:`Y Y^\top` (T x T), the Gramian of the tracked gradients.
      weights: the current weights :math:`\lambda` (T,).
      step_size: :math:`\gamma_k`, this step's step size.
      rho: :math:`\ell_2` regularisation of :math:`\lambda`.
      lambda_update: ``"softmax"`` (:math:`P` = softmax, LibMTL and the authors' shared code) or
        ``"projection"`` (:math:`P = \Pi_\Delta`, the paper's Algorithm 1).
      gramian_scale: :math:`s`, when ``tracked_gramian`` is :math:`Y Y^\top / s` (so that
        neither overflows: with losses of 1e20 the tracked Gramian is 1e40, beyond float32).

    Both maps :math:`P` are invariant to adding a constant to every entry, so the step is taken
    as :math:`\lambda - \gamma_k \rho \lambda - \gamma_k s\,(a - \min_t a_t)` with
    :math:`a = (Y Y^\top / s) \lambda`: a product :math:`\gamma_k s` too large for the dtype
    gives the exact limit (all weight on the smallest :math:`a_t`) instead of NaN.

    Returns:
      The new weights :math:`\lambda` (T,), on the simplex.
    """
    dtype = jnp.promote_types(weights.dtype, tracked_gramian.dtype)
    weights = weights.astype(dtype)
    pull = tracked_gramian.astype(dtype) @ weights
    gap = pull - jnp.min(pull)
    scale = jnp.asarray(step_size, dtype) * jnp.asarray(gramian_scale, dtype)
    # gap == 0 stays 0 when the scale is infinite (0 * inf would be NaN).
    penalty = jnp.where(gap > 0, scale * gap, 0.0)
    stepped = weights - step_size * rho * weights - penalty
    if lambda_update == "softmax":
        return jax.nn.softmax(stepped)
    if lambda_update == "projection":
        # Entries more than 1 below the largest get 0 from the projection: clipping them (and
        # -inf) there changes nothing.
        stepped = jnp.maximum(stepped, jnp.max(stepped) - 2.0)
        return projection_simplex(stepped).astype(dtype)
    raise ValueError(f"lambda_update must be 'softmax' or 'projection'; got {lambda_update!r}.")


class MoCoState(NamedTuple):
    """State of :func:`moco`."""

    count: jax.Array  # int32 (), number of updates so far
    tracked: PyTree  # params-shaped, every leaf (T, *leaf.shape): tracked task gradients Y
    weights: jax.Array  # (T,) task weights lambda, uniform at first


def moco(
    num_tasks: int,
    beta: jax.typing.ArrayLike = 0.5,
    beta_sigma: jax.typing.ArrayLike = 0.5,
    learning_rate: jax.typing.ArrayLike = 0.1,
    learning_rate_sigma: jax.typing.ArrayLike = 0.5,
    rho: jax.typing.ArrayLike = 0.0,
    lambda_update: LambdaUpdate = "softmax",
    normalize: bool = True,
) -> optax.GradientTransformationExtraArgs:
    r"""MoCo (Fernando, Shen, Liu, Chaudhury, Murugesan & Chen, "Mitigating Gradient Bias in
    Multi-objective Learning: A Provably Convergent Approach", ICLR 2023).

    Stochastic MGDA is biased because its weights depend on noisy gradients. MoCo tracks each task
    gradient with a moving average :math:`y_t` and runs MGDA's weight iteration on the tracked
    gradients; the update combines the *tracked* gradients, not this step's:

    .. math::
       h_t = \frac{g_t}{\|g_t\| + 10^{-8}} L_t, \qquad
       y_t \leftarrow y_t - \beta_k (y_t - h_t), \qquad
       \lambda \leftarrow \mathrm{softmax}\big(\lambda - \gamma_k (Y Y^\top + \rho I)\lambda\big),
       \qquad \text{update} = Y^\top \lambda

    with :math:`\beta_k = \beta / k^{\sigma_\beta}`, :math:`\gamma_k = \gamma / k^{\sigma_\gamma}`
    at the k-th update. This is LibMTL's ``MoCo`` (from the authors' shared code), the oracle of
    the tests; ``lambda_update="projection"`` and ``normalize=False`` give the paper's Algorithm 1
    (projection onto the simplex, raw gradients).

    Args:
      num_tasks: T (static), the size of :math:`\lambda` in the state.
      beta: :math:`\beta`, the tracking rate at the first update.
      beta_sigma: :math:`\sigma_\beta`, the decay exponent of the tracking rate.
      learning_rate: :math:`\gamma`, the weights' step size at the first update (the paper's
        :math:`\gamma`, LibMTL's ``MoCo_gamma``).
      learning_rate_sigma: :math:`\sigma_\gamma`, the decay exponent of the weights' step size
        (LibMTL's ``MoCo_gamma_sigma``).
      rho: :math:`\rho \ge 0`, the :math:`\ell_2` regularisation of :math:`\lambda`.
      lambda_update: ``"softmax"`` (default, LibMTL) or ``"projection"`` (the paper).
      normalize: rescale each task gradient to norm :math:`L_t` before tracking it (default, as
        LibMTL; needs ``task_losses``); ``False`` tracks the raw gradients.

    Static under ``optax.inject_hyperparams`` (``static_args``): ``num_tasks``; every other
    numeric argument may be injected.

    Returns:
      A transformation from a per-task Jacobian to one update. Needs ``task_losses`` when
      ``normalize``. Task-specific leaves get their own task's gradient; only the shared leaves are
      tracked and combined.

    Raises:
      ValueError: for invalid hyperparameters, missing ``task_losses``, ``init(None)``, or a
        Jacobian whose tasks or parameter shapes differ from the state's.

    Properties: the update is a convex combination of the tracked gradients; permutation-invariant;
    with ``normalize`` invariant to the scale of each row (only its direction and loss count).
    Stateful: step count, tracked gradients, :math:`\lambda`.

    .. warning::
      The state holds T params-shaped tracked gradients (T times the size of the parameters,
      task-specific leaves included; they stay zero). The update is not in the span of this step's
      rows: it is built from the tracked ones.
    """
    checks.positive_int("num_tasks", num_tasks)
    checks.positive("beta", beta)
    checks.positive("learning_rate", learning_rate)
    for name, value in (
        ("beta_sigma", beta_sigma),
        ("learning_rate_sigma", learning_rate_sigma),
        ("rho", rho),
    ):
        checks.nonnegative(name, value)
    if lambda_update not in ("softmax", "projection"):
        raise ValueError(f"lambda_update must be 'softmax' or 'projection'; got {lambda_update!r}.")

    def init(params) -> MoCoState:
        tracked = per_task_zeros(params, num_tasks, "moco")
        return MoCoState(
            count=jnp.zeros((), jnp.int32), tracked=tracked, weights=uniform_weights(num_tasks)
        )

    def update_rows(rows: Rows, state: MoCoState) -> tuple[list[jax.Array], MoCoState]:
        tracked_leaves = check_per_task(state.tracked, rows, "moco")
        row_leaves = jax.lax.stop_gradient(rows.leaves)
        mask = rows.shared_mask
        dtype = state.weights.dtype
        if normalize:
            shared_rows = [g for g, s in zip(row_leaves, mask) if s]
            norms = row_norms(shared_rows, num_tasks, dtype)  # squares may overflow float32
            scale = rows.losses.astype(dtype) / (norms + REFERENCE_EPS)
        else:
            scale = jnp.ones((num_tasks,), dtype)

        k = (state.count + 1).astype(dtype)
        beta_k = beta / k**beta_sigma
        learning_rate_k = learning_rate / k**learning_rate_sigma
        new_tracked = []
        for g, y, s in zip(row_leaves, tracked_leaves, mask):
            if s:
                target = scale_rows(g.astype(y.dtype), scale)
                y = y - (beta_k * (y - target)).astype(y.dtype)
            new_tracked.append(y)
        shared_tracked = [y for y, s in zip(new_tracked, mask) if s]
        # The Gramian of Y / m, m the largest |entry|, and its scale m^2 apart: with normalize the
        # tracked rows have norm L_t, and L_t = 1e20 would overflow Y Y^T in float32.
        largest = functools.reduce(
            jnp.maximum,
            (jnp.max(jnp.abs(y)).astype(dtype) for y in shared_tracked),
            jnp.asarray(jnp.finfo(dtype).tiny, dtype),
        )
        tracked_gramian = sum(
            (leaf_gramian(y / largest.astype(y.dtype)) for y in shared_tracked),
            start=jnp.zeros((num_tasks, num_tasks), dtype),
        )
        w = moco_weights(
            tracked_gramian,
            state.weights,
            step_size=learning_rate_k,
            rho=rho,
            lambda_update=lambda_update,
            gramian_scale=jnp.square(largest),
        ).astype(dtype)
        shared_out = [
            weighted_sum(w, y).astype(g.dtype) for g, y in zip(rows.shared, shared_tracked)
        ]
        new_state = MoCoState(
            count=state.count + 1,
            tracked=jax.tree.unflatten(jax.tree.structure(state.tracked), new_tracked),
            weights=w,
        )
        return with_heads(rows, shared_out), new_state

    return rows_transform(
        update_rows, name="moco", init=init, needs_losses=normalize, num_tasks=num_tasks
    )
