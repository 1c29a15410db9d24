"""The shared plumbing of weighting methods: one ``update_fn`` for every Gramian or loss method.

A method writes only its pure math (weights from the Gramian, or from the losses, plus its state)
and one of these builders turns it into an ``optax.GradientTransformationExtraArgs``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtlx._src import jacobians

PyTree = Any
# weights_fn(gramian, task_losses, state) -> (weights (T,), new_state)
GramianWeightsFn = Callable[[jax.Array, jax.Array | None, Any], tuple[jax.Array, Any]]
# weights_fn(task_losses, state) -> (weights (T,), new_state)
LossWeightsFn = Callable[[jax.Array, Any], tuple[jax.Array, Any]]


def _empty_init(params: PyTree) -> optax.EmptyState:
    del params
    return optax.EmptyState()


def gramian_weighting(
    weights_fn: GramianWeightsFn,
    *,
    name: str,
    init_fn: Callable[[PyTree], NamedTuple] = _empty_init,
    needs_losses: bool = False,
) -> optax.GradientTransformationExtraArgs:
    """A transform whose update is ``sum_t w_t J_t`` with ``w = weights_fn(G, losses, state)``.

    The Gramian comes from the ``gramian=`` extra arg when the training step already computed it
    (e.g. for :mod:`mtlx.analysis`), else from the Jacobian. Task-specific leaves get their own
    task's gradient.
    """

    def update_fn(updates, state, params=None, *, task_losses=None, gramian=None, **extra_args):
        del params, extra_args
        jac = jacobians.as_jacobian(updates)
        losses = jacobians.check_task_losses(
            task_losses, jac.num_tasks, required=needs_losses, method=name
        )
        if gramian is None:
            gramian = jac.gramian()
        elif gramian.shape != (jac.num_tasks, jac.num_tasks):
            raise ValueError(
                f"gramian has shape {gramian.shape}; the Jacobian has {jac.num_tasks} tasks."
            )
        weights, new_state = weights_fn(gramian, losses, state)
        return jac.combine(weights, task_specific="own"), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def loss_weighting(
    weights_fn: LossWeightsFn,
    *,
    name: str,
    init_fn: Callable[[PyTree], NamedTuple] = _empty_init,
    needs_losses: bool = True,
    task_specific: jacobians.TaskSpecificMode = "weighted",
) -> optax.GradientTransformationExtraArgs:
    """A transform whose update is ``sum_t w_t grad L_t`` with ``w = weights_fn(losses, state)``.

    With the engine's Jacobian this is one backward pass (the VJP of the loss vector with cotangent
    ``w``); no per-task gradient is materialised. ``task_specific="weighted"`` weights the heads'
    gradients too, as backpropagating ``sum_t w_t L_t`` does.
    """

    def update_fn(updates, state, params=None, *, task_losses=None, **extra_args):
        del params, extra_args
        jac = jacobians.as_jacobian(updates)
        losses = jacobians.check_task_losses(
            task_losses, jac.num_tasks, required=needs_losses, method=name
        )
        weights, new_state = weights_fn(losses, state)
        return jac.combine(weights, task_specific=task_specific), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def fixed_weighting(
    weights_of: Callable[[int], jax.Array], *, name: str
) -> optax.GradientTransformationExtraArgs:
    """A stateless transform with weights that depend only on the number of tasks T.

    ``task_losses`` is optional (checked when given). Heads are weighted like the shared leaves, as
    backpropagating the scalarized loss ``sum_t w_t L_t`` does.
    """

    def update_fn(updates, state, params=None, *, task_losses=None, **extra_args):
        del params, extra_args
        jac = jacobians.as_jacobian(updates)
        jacobians.check_task_losses(task_losses, jac.num_tasks, required=False, method=name)
        return jac.combine(weights_of(jac.num_tasks), task_specific="weighted"), state

    return optax.GradientTransformationExtraArgs(_empty_init, update_fn)


def as_pref_vector(pref_vector: jax.typing.ArrayLike | None) -> jax.Array | None:
    """A method's preference vector as an array (None stays None); a ValueError unless a vector."""
    if pref_vector is None:
        return None
    pref = jnp.asarray(pref_vector)
    if pref.ndim != 1:
        raise ValueError(f"pref_vector must be a vector of shape (T,); got shape {pref.shape}.")
    return pref


def check_pref_vector(pref: jax.Array | None, num_tasks: int) -> None:
    """A ValueError when a preference vector's length is not the number of tasks."""
    if pref is not None and pref.shape[0] != num_tasks:
        raise ValueError(
            f"pref_vector has {pref.shape[0]} entries but the Jacobian has {num_tasks} tasks."
        )


def check_num_tasks(method: str, expected: int, actual: int) -> None:
    """A ValueError when a method built for ``expected`` tasks (its state) sees ``actual`` tasks."""
    if actual != expected:
        raise ValueError(
            f"mtlx.{method} was built for num_tasks={expected}, but the Jacobian's task axis / the "
            f"task losses have {actual} tasks."
        )
