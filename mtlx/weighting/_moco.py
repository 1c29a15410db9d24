"""MoCo: multi-objective gradient correction with tracked gradients (Fernando et al., ICLR 2023)."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtlx._src import builders, jacobians, solvers

PyTree = Any
LambdaUpdate = Literal["softmax", "projection"]

# LibMTL's guard of the gradient normalisation g_t / (||g_t|| + eps).
_NORM_EPS = 1e-8


def moco_weights(
    tracked_gramian: jax.Array,
    weights: jax.Array,
    *,
    step_size: jax.typing.ArrayLike,
    rho: jax.typing.ArrayLike = 0.0,
    lambda_update: LambdaUpdate = "softmax",
) -> jax.Array:
    r"""One MoCo weight step, :math:`P(\lambda - \gamma_k (Y Y^\top + \rho I)\lambda)`.

    Args:
      tracked_gramian: :math:`Y Y^\top` (T x T), the Gramian of the tracked gradients.
      weights: the current weights :math:`\lambda` (T,).
      step_size: :math:`\gamma_k`, this step's step size.
      rho: :math:`\ell_2` regularisation of :math:`\lambda`.
      lambda_update: ``"softmax"`` (:math:`P` = softmax, LibMTL and the authors' shared code) or
        ``"projection"`` (:math:`P = \Pi_\Delta`, the paper's Algorithm 1).

    Returns:
      The new weights :math:`\lambda` (T,), on the simplex.
    """
    dtype = jnp.promote_types(weights.dtype, tracked_gramian.dtype)
    weights = weights.astype(dtype)
    grad = tracked_gramian.astype(dtype) @ weights + rho * weights
    stepped = weights - step_size * grad
    if lambda_update == "softmax":
        return jax.nn.softmax(stepped)
    if lambda_update == "projection":
        return solvers.project_to_simplex(stepped)
    raise ValueError(f"lambda_update must be 'softmax' or 'projection'; got {lambda_update!r}.")


class MoCoState(NamedTuple):
    """State of :func:`moco`."""

    count: jax.Array  # int32 (), number of updates so far
    tracked: PyTree  # params-shaped, every leaf (T, *leaf.shape): tracked task gradients Y
    weights: jax.Array  # (T,) task weights lambda, uniform at first


def _check_state_matches(rows: PyTree, tracked: PyTree) -> None:
    rows_def, state_def = jax.tree.structure(rows), jax.tree.structure(tracked)
    row_shapes = [jnp.shape(x) for x in jax.tree.leaves(rows)]
    state_shapes = [jnp.shape(x) for x in jax.tree.leaves(tracked)]
    if rows_def != state_def or row_shapes != state_shapes:
        raise ValueError(
            "mtlx.moco tracks the task gradients, and its state was initialised for other "
            "parameters than the Jacobian's: call tx.init(params) with the parameters the Jacobian "
            "is taken with respect to (every Jacobian leaf is (T, *param.shape)).\n"
            f"  Jacobian: {rows_def} {row_shapes}\n  state:    {state_def} {state_shapes}"
        )


def moco(
    num_tasks: int,
    beta: jax.typing.ArrayLike = 0.5,
    beta_sigma: jax.typing.ArrayLike = 0.5,
    gamma: jax.typing.ArrayLike = 0.1,
    gamma_sigma: jax.typing.ArrayLike = 0.5,
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
      gamma: :math:`\gamma`, the weight step size at the first update.
      gamma_sigma: :math:`\sigma_\gamma`, the decay exponent of the weight step size.
      rho: :math:`\rho \ge 0`, the :math:`\ell_2` regularisation of :math:`\lambda`.
      lambda_update: ``"softmax"`` (default, LibMTL) or ``"projection"`` (the paper).
      normalize: rescale each task gradient to norm :math:`L_t` before tracking it (default, as
        LibMTL; needs ``task_losses``); ``False`` tracks the raw gradients.

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
    if not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"num_tasks must be a positive int; got {num_tasks!r}.")
    for name, value in (("beta", beta), ("gamma", gamma)):
        if not isinstance(value, jax.core.Tracer) and not float(value) > 0.0:
            raise ValueError(f"{name} must be positive; got {value!r}.")
    for name, value in (("beta_sigma", beta_sigma), ("gamma_sigma", gamma_sigma), ("rho", rho)):
        if not isinstance(value, jax.core.Tracer) and not float(value) >= 0.0:
            raise ValueError(f"{name} must be non-negative; got {value!r}.")
    if lambda_update not in ("softmax", "projection"):
        raise ValueError(f"lambda_update must be 'softmax' or 'projection'; got {lambda_update!r}.")

    def init_fn(params):
        if params is None:
            raise ValueError(
                "mtlx.moco tracks the task gradients: call init(params) with the parameters "
                "(got None)."
            )
        dtype = jnp.promote_types(jnp.float32, jnp.result_type(float))
        tracked = jax.tree.map(
            lambda p: jnp.zeros(
                (num_tasks, *jnp.shape(p)), jacobians.gramian_dtype(jnp.result_type(p))
            ),
            params,
        )
        return MoCoState(
            count=jnp.zeros((), jnp.int32),
            tracked=tracked,
            weights=jnp.full((num_tasks,), 1.0 / num_tasks, dtype),
        )

    def update_fn(updates, state, params=None, *, task_losses=None, **extra_args):
        del params, extra_args
        jac = jacobians.as_jacobian(updates)
        losses = jacobians.check_task_losses(
            task_losses, jac.num_tasks, required=normalize, method="moco"
        )
        builders.check_num_tasks("moco", num_tasks, jac.num_tasks)
        rows = jac.rows()
        _check_state_matches(rows, state.tracked)
        row_leaves, treedef = jax.tree.flatten(jax.lax.stop_gradient(rows))
        tracked_leaves = jax.tree.leaves(state.tracked)
        mask = jac.shared_mask
        dtype = state.weights.dtype

        def flat(x):
            return x.reshape(num_tasks, -1)

        if normalize:
            sq_norms = sum(
                (
                    jnp.sum(jnp.square(flat(g).astype(y.dtype)), axis=1)
                    for g, y, s in zip(row_leaves, tracked_leaves, mask)
                    if s
                ),
                start=jnp.zeros((num_tasks,), dtype),
            )
            scale = losses.astype(dtype) / (jnp.sqrt(sq_norms) + _NORM_EPS)
        else:
            scale = jnp.ones((num_tasks,), dtype)

        k = (state.count + 1).astype(dtype)
        beta_k = beta / k**beta_sigma
        gamma_k = gamma / k**gamma_sigma
        new_tracked = []
        for g, y, s in zip(row_leaves, tracked_leaves, mask):
            if s:
                per_task = scale.astype(y.dtype).reshape((-1,) + (1,) * (g.ndim - 1))
                target = g.astype(y.dtype) * per_task
                y = y - (beta_k * (y - target)).astype(y.dtype)
            new_tracked.append(y)

        tracked_gramian = sum(
            (jacobians.leaf_gramian(y) for y, s in zip(new_tracked, mask) if s),
            start=jnp.zeros((num_tasks, num_tasks), dtype),
        )
        weights = moco_weights(
            tracked_gramian, state.weights, step_size=gamma_k, rho=rho, lambda_update=lambda_update
        ).astype(dtype)

        out = [
            jacobians.weighted_sum(weights, y).astype(g.dtype) if s else jnp.sum(g, axis=0)
            for g, y, s in zip(row_leaves, new_tracked, mask)
        ]
        new_state = MoCoState(
            count=state.count + 1, tracked=jax.tree.unflatten(treedef, new_tracked), weights=weights
        )
        return jax.tree.unflatten(treedef, out), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
