"""PRNG keys kept in transform states."""

from __future__ import annotations

import jax


def as_key(seed: int | jax.Array) -> jax.Array:
    """A typed PRNG key from an int seed or a key (raw uint32 keys are wrapped)."""
    if isinstance(seed, int):
        return jax.random.key(seed)
    if jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key):
        return seed
    return jax.random.wrap_key_data(seed)
