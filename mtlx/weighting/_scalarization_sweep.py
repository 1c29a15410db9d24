"""Brute-force scalarization: a grid of fixed weight vectors, K models trained at once by vmap."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_MAX_GRID_SIZE = 1_000_000


def _as_steps(value: float, step: float, what: str) -> int:
    steps = round(value / step)
    if not math.isclose(steps * step, value, rel_tol=1e-9, abs_tol=1e-12):
        raise ValueError(f"{what} = {value} is not a whole number of steps of {step}.")
    return steps


def simplex_grid(num_tasks: int, step: float = 0.1, min_weight: float = 0.1) -> jax.Array:
    r"""Every weight vector on the simplex with entries on a grid: shape ``(K, T)``.

    .. math:: \{w : w_t \in \{m, m + h, \dots\},\ w_t \ge m,\ \textstyle\sum_t w_t = 1\}

    with step :math:`h` and minimum weight :math:`m`: the brute-force grid of Kirchdorfer et al.
    (GCPR 2024) and Xin et al. (NeurIPS 2022). With the defaults, 9 vectors for 2 tasks, 36 for 3
    (``K = C(1/h - T(m/h - 1) - 1, T - 1)``, compositions of ``1/h`` into T parts of at least
    ``m/h``). Rows are in lexicographic order of the weights, largest first.

    Args:
      num_tasks: T >= 1.
      step: grid step :math:`h`; ``1 / step`` must be a whole number.
      min_weight: the smallest weight :math:`m \ge 0`, a whole number of steps (0 includes the
        corners of the simplex, where a task is switched off).

    Returns:
      A ``(K, T)`` array of weights summing to 1, in the default float dtype.

    Raises:
      ValueError: for a step that does not divide 1 or the minimum weight, or an empty or
        oversized (more than a million vectors) grid.
    """
    if not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"num_tasks must be a positive int; got {num_tasks!r}.")
    if not 0 < step <= 1:
        raise ValueError(f"step must be in (0, 1]; got {step}.")
    if min_weight < 0:
        raise ValueError(f"min_weight must be >= 0; got {min_weight}.")
    total = _as_steps(1.0, step, "1")
    low = _as_steps(min_weight, step, "min_weight")
    free = total - num_tasks * low  # grid steps left once every task has its minimum
    if free < 0:
        raise ValueError(
            f"{num_tasks} tasks with min_weight {min_weight} need a total weight of "
            f"{num_tasks * min_weight} > 1: the grid is empty."
        )
    size = math.comb(free + num_tasks - 1, num_tasks - 1)
    if size > _MAX_GRID_SIZE:
        raise ValueError(
            f"the grid has {size} weight vectors (T = {num_tasks}, step = {step}); use a coarser "
            "step or a larger min_weight."
        )

    def compositions(n: int, parts: int):
        if parts == 1:
            yield (n,)
            return
        for first in range(n, -1, -1):
            for rest in compositions(n - first, parts - 1):
                yield (first, *rest)

    counts = np.array(list(compositions(free, num_tasks)), dtype=np.int64).reshape(-1, num_tasks)
    return jnp.asarray((counts + low) / total, dtype=jnp.result_type(float))


def scalarization_sweep(step_fn: Callable[..., Any], num_swept: int = 3) -> Callable[..., Any]:
    r"""Turns a one-model train step into a K-model one: ``jax.vmap`` over the first arguments.

    The first ``num_swept`` positional arguments (by default: parameters, optimizer state, task
    weights) carry a leading axis of size K, one slice per model; the others (the batch, a step
    count) are shared by the K models and passed unbatched. ``jax.vmap`` batches the K forward and
    backward passes into one, so a grid of fixed weight vectors (:func:`simplex_grid`) trains in
    one jitted step instead of K runs:

    .. code-block:: python

      weights = mtlx.simplex_grid(num_tasks=3)                       # (36, 3)
      engine = mtlx.value_and_jacobian(loss_fn)

      def train_step(params, opt_state, w, batch):                   # one model, weights w (T,)
          tx = optax.chain(mtlx.scalarization(w), optax.adam(1e-3))  # w is traced: no retrace
          losses, jac = engine(params, batch)
          updates, opt_state = tx.update(jac, opt_state, params, task_losses=losses)
          return optax.apply_updates(params, updates), opt_state, losses

      tx = optax.chain(mtlx.scalarization(weights[0]), optax.adam(1e-3))  # state independent of w
      params_k = jax.vmap(init_params)(jax.random.split(key, len(weights)))  # or K copies
      opt_state_k = jax.vmap(tx.init)(params_k)
      sweep = jax.jit(mtlx.scalarization_sweep(train_step))
      for batch in batches:
          params_k, opt_state_k, losses_k = sweep(params_k, opt_state_k, weights, batch)

    Model ``k`` of the result equals what ``step_fn`` alone gives on the ``k``-th slices.

    Args:
      step_fn: ``step_fn(*swept, *shared) -> outputs``, a pure step for one model.
      num_swept: how many leading positional arguments have the K axis.

    Returns:
      ``sweep(*swept_k, *shared) -> outputs_k``, every output with a leading K axis.
    """
    if not isinstance(num_swept, int) or num_swept < 1:
        raise ValueError(f"num_swept must be a positive int; got {num_swept!r}.")

    def sweep(*args: Any) -> Any:
        if len(args) < num_swept:
            raise ValueError(
                f"the sweep batches its first {num_swept} arguments over the K models but got "
                f"{len(args)} arguments."
            )
        leaves = jax.tree.leaves(args[:num_swept])
        sizes = {int(np.shape(x)[0]) if np.ndim(x) else -1 for x in leaves}
        if len(sizes) != 1 or -1 in sizes:
            raise ValueError(
                "every leaf of the swept arguments needs the same leading axis of size K (one "
                f"slice per model); got leading sizes {sorted(sizes)} (-1: a scalar leaf)."
            )
        in_axes = (0,) * num_swept + (None,) * (len(args) - num_swept)
        return jax.vmap(step_fn, in_axes=in_axes)(*args)

    return sweep
