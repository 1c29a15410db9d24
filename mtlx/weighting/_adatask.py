"""AdaTask: one Adam moment pair per task on every parameter (a complete optimizer)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtlx._src import checks, jacobians
from mtlx._src.rows import check_per_task, per_task_zeros
from mtlx._src.weighting import Rows, rows_transform

PyTree = Any


class ScaleByAdaTaskState(NamedTuple):
    """State of :func:`scale_by_adatask`: per-task Adam moments, every leaf ``(T, *leaf.shape)``."""

    count: jax.Array  # int32: updates taken so far (the bias corrections' step)
    mu: PyTree  # params-shaped, each leaf (T, *leaf.shape): task t's first moment in slice t
    nu: PyTree  # params-shaped, each leaf (T, *leaf.shape): task t's second moment in slice t


def _not_a_jacobian(got: list[tuple[int, ...]], expected: list[tuple[int, ...]]) -> ValueError:
    return ValueError(
        "mtlx.adatask takes the per-task Jacobian (mtlx.value_and_jacobian, or a pytree whose "
        f"leaves are (T, *param_shape)): its state expects leaves of shapes {expected}, got "
        f"{got}. AdaTask is a complete optimizer: it goes alone, with no mtlx weighting before "
        "it (a weighting hands it one params-shaped gradient, not the T task gradients) and no "
        "optax optimizer after it. Call tx.init(params) with the parameters the Jacobian is "
        "taken with respect to."
    )


def scale_by_adatask(
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    *,
    num_tasks: int,
) -> optax.GradientTransformationExtraArgs:
    r"""AdaTask's direction: the sum over tasks of each task's own bias-corrected Adam step.

    Yang et al. (AAAI 2023) keep Adam's moments per task: task :math:`t`'s gradient
    :math:`g_t` (the Jacobian's row :math:`t`) updates its own pair, and the direction is the sum
    of the per-task normalised steps, coordinate-wise,

    .. math::
       m_t \leftarrow \beta_1 m_t + (1 - \beta_1) g_t, \quad
       v_t \leftarrow \beta_2 v_t + (1 - \beta_2) g_t^2, \qquad
       u = \sum_{t=1}^T \frac{m_t / (1 - \beta_1^k)}{\sqrt{v_t / (1 - \beta_2^k)} + \epsilon}

    at step :math:`k` (from 1), with ``eps`` outside the square root, as in Adam and the authors'
    ``Adam_with_AdaTask``. A task-specific leaf (a head) has one nonzero row, its own task's: the
    other tasks' moments stay zero and add exactly zero, so a head gets its own task's ordinary
    Adam step, as in the authors' code.

    This returns the direction; :func:`adatask` multiplies it by ``-learning_rate``.

    **Cost**: it reads the Jacobian's rows (**T backward passes** with the engine's Jacobian, run
    by ``jax.vmap``). **Memory**: the state holds 2 T copies of the parameters (a first and a
    second moment per task); ``init`` sees no shared mask, so heads get their T slots too, of
    which only their own task's is ever nonzero.

    Args:
      b1: decay of the first moments (Adam's :math:`\beta_1`), in [0, 1).
      b2: decay of the second moments (Adam's :math:`\beta_2`), in [0, 1).
      eps: added to :math:`\sqrt{\hat v_t}` in the denominators, >= 0 (with ``eps = 0`` a
        coordinate whose task moment is 0 adds 0, not 0 / 0).
      num_tasks: T (static; declare it in ``static_args`` of ``optax.inject_hyperparams``).

    Returns:
      A transformation from a per-task Jacobian (the engine's, or a pytree whose leaves are
      ``(T, *param_shape)``) to the params-shaped direction, with a
      :class:`ScaleByAdaTaskState`. ``task_losses`` is optional (checked, not used).

    Raises:
      ValueError: at ``update``, when the input is not a per-task Jacobian matching the state
        (e.g. a params-shaped gradient from a weighting chained before it); at build time, for a
        bad hyperparameter.

    Properties: invariant to a positive rescaling of any one task's loss (up to ``eps``), as each
      task has its own Adam; per-task Adam steps are bounded, so no task's gradient scale
      dominates a shared coordinate; with T = 1 it is Adam (``optax.scale_by_adam``).

    .. warning::
      It is an optimizer, not a weighting: chaining an optax optimizer after it (Adam on top of
      AdaTask) or an mtlx method before it is wrong; use :func:`adatask` alone.

    References:
      Yang, Yang, Luo, Li, Li, Tan, Song & Cheng, "AdaTask: A Task-Aware Adaptive Learning Rate
      Approach to Multi-Task Learning", AAAI 2023 (arXiv:2211.15055).
    """
    checks.positive_int("num_tasks", num_tasks)
    checks.in_unit_interval("b1", b1, include_one=False)
    checks.in_unit_interval("b2", b2, include_one=False)
    checks.nonnegative("eps", eps)

    def init(params) -> ScaleByAdaTaskState:
        return ScaleByAdaTaskState(
            count=jnp.zeros((), jnp.int32),
            mu=per_task_zeros(params, num_tasks, "adatask"),
            nu=per_task_zeros(params, num_tasks, "adatask"),
        )

    def update_rows(
        rows: Rows, state: ScaleByAdaTaskState
    ) -> tuple[list[jax.Array], ScaleByAdaTaskState]:
        mu_leaves = check_per_task(state.mu, rows, "adatask")
        nu_leaves = check_per_task(state.nu, rows, "adatask")
        count = optax.safe_int32_increment(state.count)
        out, new_mu, new_nu = [], [], []
        for x, m, v in zip(rows.leaves, mu_leaves, nu_leaves):
            dtype = m.dtype
            g = x.astype(dtype)
            decay1, decay2 = jnp.asarray(b1, dtype), jnp.asarray(b2, dtype)
            m = decay1 * m + (1 - decay1) * g
            v = decay2 * v + (1 - decay2) * g * g
            k = count.astype(dtype)
            m_hat = m / (1 - decay1**k)
            denom = jnp.sqrt(v / (1 - decay2**k)) + jnp.asarray(eps, dtype)
            # With eps = 0 a task that never touched a coordinate (a head of another task) has
            # m = v = 0 there: it adds 0.
            safe = jnp.where(denom > 0, denom, 1)
            step = jnp.where(denom > 0, m_hat / safe, 0)
            out.append(step.sum(axis=0).astype(x.dtype))
            new_mu.append(m)
            new_nu.append(v)
        treedef = jax.tree.structure(state.mu)
        return out, ScaleByAdaTaskState(
            count=count,
            mu=jax.tree.unflatten(treedef, new_mu),
            nu=jax.tree.unflatten(treedef, new_nu),
        )

    inner = rows_transform(update_rows, name="adatask", init=init, num_tasks=num_tasks)

    def update(updates, state, params=None, **extra_args):
        if not isinstance(updates, jacobians.Jacobian):
            got = [tuple(jnp.shape(x)) for x in jax.tree.leaves(updates)]
            expected = [tuple(jnp.shape(x)) for x in jax.tree.leaves(state.mu)]
            if got != expected:
                raise _not_a_jacobian(got, expected)
        return inner.update(updates, state, params, **extra_args)

    return optax.GradientTransformationExtraArgs(init, update)


def adatask(
    learning_rate: optax.ScalarOrSchedule,
    b1: jax.typing.ArrayLike = 0.9,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    *,
    num_tasks: int,
) -> optax.GradientTransformationExtraArgs:
    r"""AdaTask (Yang et al., AAAI 2023): per-task Adam on the shared parameters, as an optimizer.

    ``optax.chain(scale_by_adatask(b1, b2, eps, num_tasks=num_tasks),
    optax.scale_by_learning_rate(learning_rate))``: the update is

    .. math:: -\eta \sum_{t=1}^T \frac{\hat m_t}{\sqrt{\hat v_t} + \epsilon}

    with :math:`\hat m_t, \hat v_t` task :math:`t`'s bias-corrected Adam moments of its own
    gradient (see :func:`scale_by_adatask`); heads get their own task's Adam step.

    It is a **complete optimizer** and goes **alone**: no mtlx weighting before it (it needs the
    T task gradients, a weighting gives one) and no optax optimizer after it::

      tx = mtlx.adatask(1e-3, num_tasks=T)
      losses, jac = mtlx.value_and_jacobian(loss_fn, shared=...)(params, batch)
      updates, state = tx.update(jac, state, params, task_losses=losses)

    **Cost**: the Jacobian's rows (T backward passes with the engine's Jacobian); the state holds
    2 T copies of the parameters.

    Args:
      learning_rate: a scalar or an optax schedule.
      b1: decay of the first moments, in [0, 1).
      b2: decay of the second moments, in [0, 1).
      eps: added to :math:`\sqrt{\hat v_t}`, >= 0.
      num_tasks: T (static).

    Returns:
      An optax transformation from a per-task Jacobian to the parameter updates.

    Properties: invariant to a positive rescaling of any one task's loss (up to ``eps``); Adam
      when T = 1.

    References:
      Yang et al., "AdaTask: A Task-Aware Adaptive Learning Rate Approach to Multi-Task
      Learning", AAAI 2023 (arXiv:2211.15055).
    """
    return optax.chain(
        scale_by_adatask(b1, b2, eps, num_tasks=num_tasks),
        optax.scale_by_learning_rate(learning_rate),
    )
