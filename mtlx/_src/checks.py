"""Checks of the weighting methods' hyperparameters when a method is built: one message per rule.

A value traced by ``optax.inject_hyperparams`` (a ``jax.core.Tracer``) cannot be checked there and
is let through; array values are checked entry by entry.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def is_traced(value: Any) -> bool:
    """Whether ``value`` is a tracer (an injected hyperparameter), whose value is unknown here."""
    return isinstance(value, jax.core.Tracer)


def positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}.")


def nonnegative_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative int; got {value!r}.")


def positive(name: str, value: Any) -> None:
    if not is_traced(value) and not np.all(np.asarray(value) > 0):
        raise ValueError(f"{name} must be positive; got {value!r}.")


def nonnegative(name: str, value: Any) -> None:
    if not is_traced(value) and not np.all(np.asarray(value) >= 0):
        raise ValueError(f"{name} must be non-negative; got {value!r}.")


def in_unit_interval(name: str, value: Any, *, include_one: bool = True) -> None:
    """``value`` in [0, 1] (``include_one``) or in [0, 1)."""
    if is_traced(value):
        return
    v = np.asarray(value)
    if not np.all((v >= 0) & ((v <= 1) if include_one else (v < 1))):
        raise ValueError(f"{name} must be in [0, {'1]' if include_one else '1)'}; got {value!r}.")
