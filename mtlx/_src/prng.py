"""PRNG keys kept in transform states."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def as_key(seed: int | np.integer | jax.Array) -> jax.Array:
    """A typed PRNG key from an integer seed or a key (raw uint32 keys are wrapped).

    The seed may be a Python or numpy integer or an integer scalar array, traced included:
    ``optax.inject_hyperparams`` hands a seed to the method as a scalar array, so a seed need not
    be static.
    """
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return jax.random.key(int(seed))
    seed = jnp.asarray(seed)
    if jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key):
        return seed
    if seed.ndim == 0 and jnp.issubdtype(seed.dtype, jnp.integer):
        return jax.random.key(seed)
    if seed.ndim == 0:
        raise TypeError(f"a seed must be an integer or a PRNG key; got dtype {seed.dtype}.")
    return jax.random.wrap_key_data(seed)
