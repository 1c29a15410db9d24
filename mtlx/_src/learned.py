"""A per-task parameter learned by an inner optax optimizer, inside a weighting's state.

UW's log-variances, IMTL-L's log-scales, FAMO's and GradNorm's logits are ``(T,)`` parameters that
the reference implementations train with the model's optimizer. In an optax chain the transform
only sees gradients, so it trains them itself: its state keeps the value and the inner optimizer's
state, and each update takes one step with the gradient of the method's own objective.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def init_learned(
    optimizer: optax.GradientTransformation, value: jax.Array
) -> tuple[jax.Array, optax.OptState]:
    """``(value, optimizer_state)``: the learned parameter at its start, its optimizer's state."""
    value = jnp.asarray(value)
    return value, optimizer.init(value)


def step_learned(
    optimizer: optax.GradientTransformation,
    value: jax.Array,
    opt_state: optax.OptState,
    gradient: jax.Array,
    *,
    active: jax.Array | None = None,
) -> tuple[jax.Array, optax.OptState]:
    """One step of ``optimizer`` on ``value`` along ``gradient``: ``(new_value, new_opt_state)``.

    The value and every leaf of the optimizer's state keep their dtypes (the state's shape and
    dtypes do not change from one update to the next, as ``jax.lax.scan`` needs). Where ``active``
    (a bool scalar) is False the step is not taken: the value AND the optimizer's state (its step
    count, its moments) are returned unchanged, as if the optimizer had not been called.
    """
    updates, new_opt_state = optimizer.update(gradient.astype(value.dtype), opt_state, value)
    new_value = optax.apply_updates(value, updates)

    def keep_dtype(new, old):
        if active is not None:
            new = jnp.where(active, new, old)
        return new.astype(old.dtype)

    return keep_dtype(new_value, value), jax.tree.map(keep_dtype, new_opt_state, opt_state)
