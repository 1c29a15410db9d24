"""ExcessMTL: robust task weights from excess-risk estimates (He et al., ICML 2024)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from mtlx._src import checks
from mtlx._src.methods import state_dtype, uniform_weights
from mtlx._src.rows import check_per_task, per_task_zeros
from mtlx._src.tolerances import ADAGRAD_EPS
from mtlx._src.weighting import Stats, Weighting, WeightingTransformation, as_transform

PyTree = Any


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
        return jnp.sum((sq_g / jnp.sqrt(s + ADAGRAD_EPS)).reshape(num_tasks, -1), axis=1)

    dtype = state.weights.dtype
    excess = sum(jax.tree.leaves(jax.tree.map(leaf_excess, sq_rows, sq_grad_sum)))
    excess = jnp.asarray(excess, dtype)

    in_warmup = state.count < n_warmup_steps
    first = state.count == n_warmup_steps
    warmup_sum = jnp.where(in_warmup, state.warmup_sum + excess, state.warmup_sum)
    warmup_mean = state.warmup_sum / jnp.maximum(jnp.asarray(n_warmup_steps, dtype), 1.0)
    had_warmup = jnp.asarray(n_warmup_steps) > 0
    baseline = jnp.where(first, jnp.where(had_warmup, warmup_mean, excess), state.baseline)
    scaled = jnp.where(first & ~had_warmup, excess, excess / (baseline + ADAGRAD_EPS))
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


def excess_mtl(
    num_tasks: int,
    learning_rate: jax.typing.ArrayLike = 1.0,
    n_warmup_steps: int = 0,
) -> WeightingTransformation:
    r"""ExcessMTL (He et al., "Robust Multi-Task Learning with Excess Risks", ICML 2024).

    Task weights follow an exponentiated-gradient ascent on per-task *excess risks* (the distance
    of each task to its own optimum, not its raw loss, so noisy tasks are not over-weighted):

    .. math:: e_t = \sum_p \frac{g_{t,p}^2}{\sqrt{\sum_{k \le \text{step}} g_{t,p,k}^2 + 10^{-7}}},
       \qquad w \leftarrow \mathrm{softmax}\big(\log w + \eta\, e / e^{(0)}\big),
       \qquad \text{update} = \textstyle\sum_t w_t g_t

    where :math:`e^{(0)}` is the baseline excess risk (scale processing, Section 3.2). Matches
    TorchJD 0.18's ``ExcessMTL(robust_step_size, n_warmup_steps)`` step for step (its
    ``robust_step_size`` is ``learning_rate`` here). Reads the rows
    (per-parameter squared gradients), not only the Gramian.

    Args:
      num_tasks: T (static), the size of the weight vectors in the state.
      learning_rate: :math:`\eta > 0`, the step size of the weight update (the paper's and
        TorchJD's ``robust_step_size``).
      n_warmup_steps: number of first updates with uniform weights that only collect the baseline
        (the paper's Appendix C.1 suggests 3 epochs). 0 (default): the first update's excess risk
        is the baseline, as in TorchJD, LibMTL and the official code.

    Static under ``optax.inject_hyperparams`` (``static_args``): ``num_tasks``,
    ``n_warmup_steps``; every other numeric argument may be injected.

    Returns:
      A transformation from a per-task Jacobian to one update; ``task_losses`` is optional.
      Task-specific leaves get their own task's gradient and do not enter the excess risks.

    Raises:
      ValueError: for ``num_tasks < 1``, a non-positive ``learning_rate``, a negative
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
    checks.positive_int("num_tasks", num_tasks)
    checks.positive("learning_rate", learning_rate)
    checks.nonnegative_int("n_warmup_steps", n_warmup_steps)

    def init(params) -> ExcessMTLState:
        zeros = lambda: jnp.zeros((num_tasks,), state_dtype())  # one array per field (donation)
        return ExcessMTLState(
            count=jnp.zeros((), jnp.int32),
            weights=uniform_weights(num_tasks),
            sq_grad_sum=per_task_zeros(params, num_tasks, "excess_mtl"),
            baseline=zeros(),
            warmup_sum=zeros(),
        )

    def weights(stats: Stats, state: ExcessMTLState) -> tuple[jax.Array, ExcessMTLState]:
        rows = stats.rows
        check_per_task(state.sq_grad_sum, rows, "excess_mtl")
        # Task-specific leaves keep their own gradient and stay out of the excess risks.
        shared_rows = [x if s else jnp.zeros_like(x) for x, s in zip(rows.leaves, rows.shared_mask)]
        w, new_state = excess_mtl_weights(
            jax.lax.stop_gradient(
                jax.tree.unflatten(jax.tree.structure(state.sq_grad_sum), shared_rows)
            ),
            state,
            robust_step_size=learning_rate,
            n_warmup_steps=n_warmup_steps,
        )
        return w, new_state

    # A weighting that reads the rows: the builder materialises them once, and combines them with
    # these weights (heads keep their own gradient); CR-MOGM can smooth the weights.
    return as_transform(
        Weighting("excess_mtl", weights, init=init, reads="rows", num_tasks=num_tasks)
    )
