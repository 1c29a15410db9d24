"""A non-finite guard around any chain: skip the update, keep the state, count the skips."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtlx._src.jacobians import as_jacobian


class SkipNonFiniteState(NamedTuple):
    """State of :func:`skip_nonfinite`."""

    inner: Any  # the wrapped transformation's state, as of the last finite update
    skipped: jax.Array  # int32: updates skipped so far
    last_skipped: jax.Array  # bool: whether the latest update was skipped


def _all_finite(tree: Any) -> jax.Array:
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
    if not leaves:
        return jnp.asarray(True)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def skip_nonfinite(
    inner: optax.GradientTransformation, *, check_jacobian: bool = False
) -> optax.GradientTransformationExtraArgs:
    r"""Wraps a chain that holds a weighting: an update whose inputs or result are not finite is
    skipped (a zero update), the chain's state is left as it was, and the skips are counted.

    .. code-block:: python

      tx = mtlx.skip_nonfinite(optax.chain(mtlx.pcgrad(), optax.adam(1e-3)))
      updates, state = tx.update(jac, state, params, task_losses=losses)
      state.skipped  # how many updates were skipped

    A NaN or infinite task loss, or an update the chain made non-finite, would otherwise enter
    the parameters and the state of every method with a history (loss averages, moments, learned
    scales, PRNG streams), for good. Inside ``jit`` nothing can raise; this keeps the step
    well-defined instead: ``where(finite, new, old)`` on the update and on the state.

    Args:
      inner: the transformation to guard, typically the whole chain (weighting and optimizer),
        so that neither the weighting's nor the optimizer's state takes a bad step.
      check_jacobian: also skip when the Jacobian itself holds a non-finite entry. Without it a
        non-finite row is caught wherever it reaches the update (a weighted sum with it is
        non-finite), but not by methods that drop rows on their own (GradDrop's masks, trimmed
        mean, Krum); with it, one more product :math:`J^\top 1` is formed (one backward pass for
        the engine's lazy Jacobian).

    Returns:
      An optax transformation with the same inputs as ``inner``; its state is a
      :class:`SkipNonFiniteState`.

    Caveat: the test runs on the update and the losses, not inside the weighting: a method that
    turns a non-finite input into a finite but meaningless update (e.g. by masking) is only
    caught with ``check_jacobian=True``.
    """
    inner = optax.with_extra_args_support(inner)

    def init(params: Any) -> SkipNonFiniteState:
        return SkipNonFiniteState(
            inner.init(params), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.bool_)
        )

    def update(
        updates: Any, state: SkipNonFiniteState, params: Any = None, **extra_args: Any
    ) -> tuple[Any, SkipNonFiniteState]:
        new_updates, new_inner = inner.update(updates, state.inner, params, **extra_args)
        finite = _all_finite(new_updates)
        losses = extra_args.get("task_losses")
        if losses is not None:
            finite &= _all_finite(losses)
        if check_jacobian:
            # Every row with weight 1: one non-finite entry anywhere makes the sum non-finite.
            jac = as_jacobian(updates, method="skip_nonfinite")
            finite &= _all_finite(jac.combine(jnp.ones((jac.num_tasks,)), "weighted"))
        # A select, not arithmetic (PRNG keys in the state have no where): the finite step's
        # update and state, or a zero update and the state as it was.
        new_updates, new_inner = jax.lax.cond(
            finite,
            lambda: (new_updates, new_inner),
            lambda: (jax.tree.map(jnp.zeros_like, new_updates), state.inner),
        )
        skipped = state.skipped + jnp.logical_not(finite).astype(jnp.int32)
        return new_updates, SkipNonFiniteState(new_inner, skipped, jnp.logical_not(finite))

    return optax.GradientTransformationExtraArgs(init, update)
