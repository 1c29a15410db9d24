"""ExcessMTL: robust task weights from excess-risk estimates (He et al., ICML 2024)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtlx._src import builders, jacobians

PyTree = Any

# TorchJD's (and the official implementation's) constants: AdaGrad's epsilon under the square root
# and the guard of the baseline division.
_ADAGRAD_EPS = 1e-7
_BASELINE_EPS = 1e-7


class ExcessMTLState(NamedTuple):
    """State of :func:`excess_mtl`."""

    count: jax.Array  # int32 (), number of updates so far (warmup ones included)
    weights: jax.Array  # (T,) task weights on the simplex, uniform at first
    sq_grad_sum: PyTree  # params-shaped, every leaf (T, *leaf.shape): sum of squared task gradients
    baseline: jax.Array  # (T,) excess risk the later ones are divided by (set after warmup)
    warmup_sum: jax.Array  # (T,) sum of the excess risks seen during warmup


def excess_mtl_weights(
    rows: PyTree,
    state: ExcessMTLState,
    *,
    robust_step_size: jax.typing.ArrayLike = 1.0,
    n_warmup_steps: jax.typing.ArrayLike = 0,
) -> tuple[jax.Array, ExcessMTLState]:
    r"""One ExcessMTL step: new task weights ``(T,)`` and state from the Jacobian rows.

    With :math:`S \mathrel{+}= g_t^2` (per parameter) and :math:`h = \sqrt{S + 10^{-7}}`, the excess
    risk of task t is :math:`e_t = \sum_p g_{t,p}^2 / h_{t,p}` (Equations 6-7: a diagonal AdaGrad
    estimate of :math:`g_t^\top H_t^{-1} g_t`), divided by its baseline, then
    :math:`w \leftarrow \mathrm{softmax}(\log w + \eta\, e)` (Equation 9, in log space).

    Args:
      rows: the Jacobian, every leaf ``(T, *leaf.shape)`` with the structure of
        ``state.sq_grad_sum`` (task-specific leaves zeroed).
      state: the current state.
      robust_step_size: :math:`\eta`, the exponentiated-gradient step size.
      n_warmup_steps: updates with uniform weights that only collect statistics; their mean
        excess risk becomes the baseline. With 0, the first update's excess risk is the baseline
        and that update uses it unscaled (TorchJD and the official implementation).

    Returns:
      ``(weights, new_state)``; the update is ``sum_t weights[t] g_t``.
    """
    sq_rows = jax.tree.map(lambda g, s: jnp.square(g.astype(s.dtype)), rows, state.sq_grad_sum)
    sq_grad_sum = jax.tree.map(jnp.add, state.sq_grad_sum, sq_rows)
    num_tasks = state.weights.shape[0]

    def leaf_excess(sq_g, s):
        return jnp.sum((sq_g / jnp.sqrt(s + _ADAGRAD_EPS)).reshape(num_tasks, -1), axis=1)

    dtype = state.weights.dtype
    excess = sum(jax.tree.leaves(jax.tree.map(leaf_excess, sq_rows, sq_grad_sum)))
    excess = jnp.asarray(excess, dtype)

    in_warmup = state.count < n_warmup_steps
    first = state.count == n_warmup_steps
    warmup_sum = jnp.where(in_warmup, state.warmup_sum + excess, state.warmup_sum)
    warmup_mean = state.warmup_sum / jnp.maximum(jnp.asarray(n_warmup_steps, dtype), 1.0)
    had_warmup = jnp.asarray(n_warmup_steps) > 0
    baseline = jnp.where(first, jnp.where(had_warmup, warmup_mean, excess), state.baseline)
    scaled = jnp.where(first & ~had_warmup, excess, excess / (baseline + _BASELINE_EPS))
    # log(0) = -inf for a weight that underflowed is harmless: softmax maps it back to 0, and a
    # saturated (huge) excess risk saturates the weights instead of overflowing to inf/NaN.
    stepped = jax.nn.softmax(jnp.log(state.weights) + robust_step_size * scaled)
    weights = jnp.where(in_warmup, state.weights, stepped).astype(dtype)
    new_state = ExcessMTLState(
        count=state.count + 1,
        weights=weights,
        sq_grad_sum=sq_grad_sum,
        baseline=baseline.astype(dtype),
        warmup_sum=warmup_sum.astype(dtype),
    )
    return weights, new_state


def _check_state_matches(rows: PyTree, sq_grad_sum: PyTree, method: str) -> None:
    rows_def, state_def = jax.tree.structure(rows), jax.tree.structure(sq_grad_sum)
    shapes = [
        (jnp.shape(r), jnp.shape(s))
        for r, s in zip(jax.tree.leaves(rows), jax.tree.leaves(sq_grad_sum))
    ]
    if rows_def != state_def or any(r != s for r, s in shapes):
        raise ValueError(
            f"mtlx.{method} keeps per-parameter statistics, and its state was initialised for "
            "other parameters than the Jacobian's: call tx.init(params) with the parameters the "
            "Jacobian is taken with respect to (every Jacobian leaf is (T, *param.shape)).\n"
            f"  Jacobian: {rows_def} {[r for r, _ in shapes]}\n"
            f"  state:    {state_def} {[s for _, s in shapes]}"
        )


def excess_mtl(
    num_tasks: int,
    robust_step_size: jax.typing.ArrayLike = 1.0,
    n_warmup_steps: int = 0,
) -> optax.GradientTransformationExtraArgs:
    r"""ExcessMTL (He et al., "Robust Multi-Task Learning with Excess Risks", ICML 2024).

    Task weights follow an exponentiated-gradient ascent on per-task *excess risks* (the distance
    of each task to its own optimum, not its raw loss, so noisy tasks are not over-weighted):

    .. math:: e_t = \sum_p \frac{g_{t,p}^2}{\sqrt{\sum_{k \le \text{step}} g_{t,p,k}^2 + 10^{-7}}},
       \qquad w \leftarrow \mathrm{softmax}\big(\log w + \eta\, e / e^{(0)}\big),
       \qquad \text{update} = \textstyle\sum_t w_t g_t

    where :math:`e^{(0)}` is the baseline excess risk (scale processing, Section 3.2). Matches
    TorchJD 0.18's ``ExcessMTL(robust_step_size, n_warmup_steps)`` step for step. Reads the rows
    (per-parameter squared gradients), not only the Gramian.

    Args:
      num_tasks: T (static), the size of the weight vectors in the state.
      robust_step_size: :math:`\eta > 0`, the step size of the weight update.
      n_warmup_steps: number of first updates with uniform weights that only collect the baseline
        (the paper's Appendix C.1 suggests 3 epochs). 0 (default): the first update's excess risk
        is the baseline, as in TorchJD, LibMTL and the official code.

    Returns:
      A transformation from a per-task Jacobian to one update; ``task_losses`` is optional.
      Task-specific leaves get their own task's gradient and do not enter the excess risks.

    Raises:
      ValueError: for ``num_tasks < 1``, a non-positive ``robust_step_size``, a negative
        ``n_warmup_steps``, ``init(None)``, or a Jacobian whose tasks or parameter shapes differ
        from the state's.

    Properties: weights on the simplex (the update is a convex combination of the rows);
    permutation-invariant; not positively homogeneous (AdaGrad's epsilon, and the first update
    uses the raw excess risk). Stateful: weights, per-parameter squared-gradient sums.

    .. note::
      The weights start uniform at :math:`1/T` and stay on the simplex, as in the paper and
      TorchJD; LibMTL and the official code start at 1 and renormalise to sum to T (T times these
      weights).

    .. warning::
      The state holds a params-shaped sum of squared gradients per task (T times the size of the
      parameters), task-specific leaves included (they stay zero).
    """
    if not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"num_tasks must be a positive int; got {num_tasks!r}.")
    if not isinstance(robust_step_size, jax.core.Tracer) and not float(robust_step_size) > 0.0:
        raise ValueError(f"robust_step_size must be positive; got {robust_step_size!r}.")
    if not isinstance(n_warmup_steps, int) or n_warmup_steps < 0:
        raise ValueError(f"n_warmup_steps must be a non-negative int; got {n_warmup_steps!r}.")

    def init_fn(params):
        if params is None:
            raise ValueError(
                "mtlx.excess_mtl keeps per-parameter statistics: call init(params) with the "
                "parameters (got None)."
            )
        dtype = jnp.promote_types(jnp.float32, jnp.result_type(float))
        return ExcessMTLState(
            count=jnp.zeros((), jnp.int32),
            weights=jnp.full((num_tasks,), 1.0 / num_tasks, dtype),
            sq_grad_sum=jax.tree.map(
                lambda p: jnp.zeros(
                    (num_tasks, *jnp.shape(p)), jacobians.gramian_dtype(jnp.result_type(p))
                ),
                params,
            ),
            baseline=jnp.zeros((num_tasks,), dtype),
            warmup_sum=jnp.zeros((num_tasks,), dtype),
        )

    def update_fn(updates, state, params=None, *, task_losses=None, **extra_args):
        del params, extra_args
        jac = jacobians.as_jacobian(updates)
        jacobians.check_task_losses(task_losses, jac.num_tasks, required=False, method="excess_mtl")
        builders.check_num_tasks("excess_mtl", num_tasks, jac.num_tasks)
        rows = jac.rows()
        _check_state_matches(rows, state.sq_grad_sum, "excess_mtl")
        # Task-specific leaves keep their own gradient and stay out of the excess risks.
        leaves = [
            x if s else jnp.zeros_like(x) for x, s in zip(jax.tree.leaves(rows), jac.shared_mask)
        ]
        shared_rows = jax.tree.unflatten(jax.tree.structure(rows), leaves)
        weights, new_state = excess_mtl_weights(
            jax.lax.stop_gradient(shared_rows),
            state,
            robust_step_size=robust_step_size,
            n_warmup_steps=n_warmup_steps,
        )
        return jac.combine(weights, task_specific="own"), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
