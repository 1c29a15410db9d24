"""Trimmed mean: the coordinate-wise mean of the task gradients without their extreme values."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from mtlx._src import checks
from mtlx._src.rows import with_heads
from mtlx._src.weighting import Rows, rows_transform


def trimmed_mean_rows(rows: jax.Array, trim_number: int) -> jax.Array:
    r"""Coordinate-wise trimmed mean of ``rows`` (``(T, ...)``) over the task axis.

    .. math:: u_k = \frac{1}{T - 2b} \sum_{r = b + 1}^{T - b} g_{(r), k}

    where :math:`g_{(1), k} \le \dots \le g_{(T), k}` are the sorted values of coordinate ``k`` and
    :math:`b` = ``trim_number``.

    Raises:
      ValueError: when ``T < 2 * trim_number + 1`` or ``trim_number < 0``.
    """
    _check_trim_number(trim_number)
    num_tasks = rows.shape[0]
    if num_tasks < 2 * trim_number + 1:
        raise ValueError(
            f"trimmed_mean with trim_number={trim_number} needs at least 2 * trim_number + 1 = "
            f"{2 * trim_number + 1} tasks; the Jacobian has {num_tasks}."
        )
    kept = jnp.sort(rows, axis=0)[trim_number : num_tasks - trim_number]
    return kept.mean(axis=0)


def _check_trim_number(trim_number: int) -> None:
    checks.nonnegative_int("trim_number", trim_number)


def trimmed_mean(trim_number: int) -> optax.GradientTransformationExtraArgs:
    r"""Coordinate-wise trimmed mean (Yin et al., ICML 2018), as TorchJD's ``TrimmedMean``.

    For every parameter coordinate, the ``trim_number`` largest and ``trim_number`` smallest task
    gradients are dropped and the remaining :math:`T - 2b` are averaged. Not a weighting: each
    coordinate keeps different tasks, so it reads the Jacobian's rows (T backward passes with the
    engine's Jacobian).

    Args:
      trim_number: values removed at each end of every coordinate (static); 0 gives the mean.

    Static under ``optax.inject_hyperparams`` (``static_args``): ``trim_number``; every other
    numeric argument may be injected.

    Returns:
      A transformation from a per-task Jacobian to the trimmed mean (each leaf ``shape``).
      ``task_losses`` is optional; other extra args (``gramian=``) are ignored.

    Raises:
      ValueError: at construction for a negative ``trim_number``; at the first update (trace
        time) when the Jacobian has fewer than ``2 * trim_number + 1`` tasks.

    Properties: permutation-invariant, positively homogeneous, coordinate-wise (so the same for a
    pytree as for its flattening), robust to ``trim_number`` arbitrary rows per coordinate.

    .. note::
      Task-specific leaves (heads) get their own task's gradient, as in every gradient-aggregation
      method of mtlx; only the shared leaves are trimmed.

    References:
      Yin, Chen, Ramchandran & Bartlett, "Byzantine-Robust Distributed Learning: Towards Optimal
      Statistical Rates", ICML 2018.
    """
    _check_trim_number(trim_number)

    def update_rows(
        rows: Rows, state: optax.EmptyState
    ) -> tuple[list[jax.Array], optax.EmptyState]:
        return with_heads(rows, [trimmed_mean_rows(x, trim_number) for x in rows.shared]), state

    return rows_transform(update_rows, name="trimmed_mean")
