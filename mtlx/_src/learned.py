"""A per-task parameter learned by an inner optax optimizer, inside a weighting's state.

UW's log-variances, IMTL-L's log-scales, FAMO's and GradNorm's logits are ``(T,)`` parameters that
the reference implementations train with the model's optimizer. In an optax chain the transform
only sees gradients, so it trains them itself: its state keeps the value and the inner optimizer's
state, and each update takes one step with the gradient of the method's own objective.
"""

from __future__ import annotations

from typing import NamedTuple

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


class OverflowSafeAdamState(NamedTuple):
    """State of :func:`overflow_safe_adam`."""

    count: jax.Array  # int32 (), number of steps taken
    mu: optax.Params  # first moment, as optax.adam's
    rms: optax.Params  # square root of optax.adam's second moment


def overflow_safe_adam(
    learning_rate: jax.typing.ArrayLike,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> optax.GradientTransformation:
    """``optax.adam`` whose second moment cannot overflow: it keeps ``sqrt(nu)``, not ``nu``.

    The default inner optimizer of the learned weights (UW, IMTL-L, IMTL, GradNorm, FAMO). A
    gradient of 1e30 (UW's ``1 - exp(-s_t) L_t`` at a loss of 1e30) squares to inf in float32, and
    an infinite ``nu`` stays infinite: every later step of optax.adam is 0 and the learned value
    never moves again. Here ``rms_k = sqrt(b2 rms_{k-1}^2 + (1 - b2) g_k^2)`` is formed as
    ``m sqrt(1 + (n / m)^2)`` with ``m, n`` the larger and smaller of ``sqrt(b2) rms_{k-1}`` and
    ``sqrt(1 - b2) |g_k|``, so it is finite for every finite gradient. Same update as
    ``optax.adam(learning_rate, b1, b2, eps)`` up to rounding.
    """

    def init(params: optax.Params) -> OverflowSafeAdamState:
        # Two trees of their own: one array in both fields would be donated twice by a step
        # that donates its optimizer state ("donate the same buffer twice").
        zeros = lambda: jax.tree.map(jnp.zeros_like, params)
        return OverflowSafeAdamState(jnp.zeros((), jnp.int32), zeros(), zeros())

    def update(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        mu = jax.tree.map(lambda m, g: b1 * m + (1.0 - b1) * g, state.mu, updates)

        def rms_step(r, g):
            old, new = jnp.sqrt(b2) * r, jnp.sqrt(1.0 - b2) * jnp.abs(g)
            big, small = jnp.maximum(old, new), jnp.minimum(old, new)
            ratio = small / jnp.where(big > 0, big, 1.0)
            return big * jnp.sqrt(1.0 + ratio * ratio)

        rms = jax.tree.map(rms_step, state.rms, updates)

        def step(m, r):
            k = count.astype(m.dtype)  # the corrections in the leaf's precision, as optax's
            m_hat = m / (1.0 - b1**k)
            r_hat = r / jnp.sqrt(1.0 - b2**k)
            return -learning_rate * m_hat / (r_hat + eps)

        new_updates = jax.tree.map(step, mu, rms)
        return new_updates, OverflowSafeAdamState(count, mu, rms)

    return optax.GradientTransformation(init, update)
