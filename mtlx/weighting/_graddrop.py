"""GradDrop: gradient sign dropout."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtlx._src import prng
from mtlx._src.rows import with_heads
from mtlx._src.weighting import Rows, rows_transform


def graddrop_rows(
    rows: jax.Array,
    uniform: jax.Array,
    leak: jax.Array | None = None,
    f: Callable[[jax.Array], jax.Array] | None = None,
) -> jax.Array:
    r"""GradDrop's combination of ``rows`` (``(T, ...)``) with the uniform draws ``uniform``.

    .. math:: P = \tfrac12\Big(1 + \frac{\sum_i g_i}{\sum_i |g_i|}\Big), \quad
       M_i = [f(P) > U][g_i > 0] + [f(P) < U][g_i < 0], \quad
       u = \sum_i (\ell_i + (1 - \ell_i) M_i)\, g_i

    all coordinate-wise, with ``U = uniform`` (``rows.shape[1:]``, values in [0, 1)) and leak
    :math:`\ell` (zeros by default). Where every row is zero, :math:`P = 1/2` (the update is 0
    there anyway; TorchJD divides 0 by 0).
    """
    num_tasks = rows.shape[0]
    total = rows.sum(axis=0)
    magnitude = jnp.abs(rows).sum(axis=0)
    ratio = jnp.where(magnitude > 0, total / jnp.where(magnitude > 0, magnitude, 1.0), 0.0)
    purity = 0.5 * (1.0 + ratio)
    f_purity = purity if f is None else f(purity)
    keep = ((f_purity > uniform) & (rows > 0)) | ((f_purity < uniform) & (rows < 0))
    if leak is None:
        return jnp.where(keep, rows, 0.0).sum(axis=0)
    leak = jnp.asarray(leak, rows.dtype).reshape((num_tasks,) + (1,) * (rows.ndim - 1))
    return ((leak + (1.0 - leak) * keep.astype(rows.dtype)) * rows).sum(axis=0)


class GradDropState(NamedTuple):
    """State of :func:`graddrop`."""

    key: jax.Array  # typed PRNG key, split once per step for the uniform draws U


def graddrop(
    seed: int | jax.Array = 0,
    leak: jax.typing.ArrayLike | None = None,
    f: Callable[[jax.Array], jax.Array] | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Gradient sign dropout (GradDrop), lines 10-15 of Algorithm 1 of Chen et al. (NeurIPS 2020).

    For every parameter coordinate, the gradient positive sign purity
    :math:`P = \frac12 (1 + \sum_i g_i / \sum_i |g_i|)` is compared with a uniform draw
    :math:`U`: if :math:`f(P) > U` only the positive task gradients of that coordinate are kept,
    else only the negative ones; ``leak[i]`` lets a fraction of task ``i``'s dropped gradient
    through. As TorchJD's ``GradDrop``. Not a weighting: it reads the Jacobian's rows (T backward
    passes with the engine's Jacobian) and draws one ``U`` per shared parameter coordinate.

    Args:
      seed: int seed or PRNG key for the uniform draws (kept in the state).
      leak: ``(T,)`` leak values in [0, 1]; ``None`` for no leak.
      f: monotonically increasing map applied to ``P`` (a JAX function); ``None`` for identity.

    Static under ``optax.inject_hyperparams`` (``static_args``): none; every numeric argument
    may be injected.

    Returns:
      A transformation from a per-task Jacobian to one update (each leaf ``shape``).
      ``task_losses`` is optional; other extra args (``gramian=``) are ignored.

    Raises:
      ValueError: if ``leak`` is not a vector, or its length differs from the number of tasks.

    Properties: positively homogeneous, sign-consistent (each coordinate of the update has the
    sign of the kept task gradients), equal to the plain sum when no coordinate has mixed signs,
    and to the plain sum with ``leak = 1``. Random: ``U`` is drawn once over the concatenated
    shared coordinates, so a pytree gives the same update as its flattening.

    .. note::
      The paper applies GradDrop to the gradients w.r.t. an activation layer (its Algorithm 1
      multiplies by the input's sign); here, as in TorchJD, it applies to the parameter
      gradients. Task-specific leaves get their own task's gradient.

    References:
      Chen et al., "Just Pick a Sign: Optimizing Deep Multitask Models with Gradient Sign
      Dropout", NeurIPS 2020.
    """
    leak_array = None if leak is None else jnp.asarray(leak)
    if leak_array is not None and leak_array.ndim != 1:
        raise ValueError(f"leak must be a vector of shape (T,); got shape {leak_array.shape}.")

    def init(params) -> GradDropState:
        del params
        return GradDropState(key=prng.as_key(seed))

    def update_rows(rows: Rows, state: GradDropState) -> tuple[list[jax.Array], GradDropState]:
        if leak_array is not None and leak_array.shape[0] != rows.num_tasks:
            raise ValueError(
                f"leak has {leak_array.shape[0]} entries but the Jacobian has {rows.num_tasks} "
                "tasks."
            )
        next_key, key = jax.random.split(state.key)
        shared = rows.shared
        # One U over the concatenated shared coordinates, in leaf order: a pytree and its
        # flattening see the same draws.
        sizes = [int(np.prod(x.shape[1:])) for x in shared]
        dtype = jnp.result_type(*shared) if shared else jnp.float32
        uniform = jax.random.uniform(key, (sum(sizes),), dtype=dtype)
        pieces = jnp.split(uniform, np.cumsum(sizes)[:-1]) if shared else []
        out = [
            graddrop_rows(x, u.reshape(x.shape[1:]).astype(x.dtype), leak_array, f)
            for x, u in zip(shared, pieces)
        ]
        return with_heads(rows, out), GradDropState(key=next_key)

    return rows_transform(update_rows, name="graddrop", init=init)
