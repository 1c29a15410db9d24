"""Properties every method claims in tests/methods_under_test.py, checked with hypothesis."""

import functools

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import methods_under_test, strategies

ENTRIES = methods_under_test.entries()


def _entries(flag=None):
    chosen = [e for e in ENTRIES if flag is None or e[flag]]
    return pytest.mark.parametrize("entry", chosen, ids=[e["name"] for e in chosen])


@functools.cache
def _jitted(name, num_tasks):
    entry = next(e for e in ENTRIES if e["name"] == name)
    tx = methods_under_test.make(entry, num_tasks)
    return tx, jax.jit(tx.update)


def _apply(entry, j, losses=None):
    j = np.asarray(j)
    hypothesis.assume(j.shape[0] >= entry["min_tasks"])
    tx, update = _jitted(entry["name"], j.shape[0])
    losses = np.linspace(0.5, 2.0, j.shape[0]) if losses is None else losses
    state = tx.init(jnp.zeros(j.shape[1:]))
    return np.asarray(update(jnp.asarray(j), state, None, task_losses=jnp.asarray(losses))[0])


@_entries()
@hypothesis.given(j=strategies.jacobians(tasks=(2, 3, 5)))
def test_update_lies_in_the_span_of_the_rows(entry, j):
    if entry["name"] in ("trimmed_mean", "graddrop"):  # coordinate-wise methods leave the span
        return
    out = _apply(entry, j)
    coef, *_ = np.linalg.lstsq(j.T, out, rcond=None)
    np.testing.assert_allclose(j.T @ coef, out, atol=1e-6 * (1 + np.abs(out).max()))


@_entries("non_conflicting")
@hypothesis.given(j=strategies.jacobians(tasks=(2, 3, 5)))
def test_non_conflicting(entry, j):
    out = _apply(entry, j)
    tolerance = entry["conflict_tolerance"] * (1e-12 + np.max(np.sum(j**2, axis=1)))
    assert np.all(j @ out >= -tolerance), j @ out


@_entries("permutation_invariant")
@hypothesis.given(j=strategies.jacobians(tasks=(2, 3, 5)), seed=st.integers(0, 2**16))
def test_permutation_invariant(entry, j, seed):
    perm = np.random.default_rng(seed).permutation(j.shape[0])
    losses = np.linspace(0.5, 2.0, j.shape[0])
    np.testing.assert_allclose(
        _apply(entry, j[perm], losses[perm]), _apply(entry, j, losses), rtol=1e-5, atol=1e-7
    )


@_entries("homogeneous")
@hypothesis.given(j=strategies.jacobians(tasks=(2, 3, 5)), c=st.sampled_from([0.5, 2.0, 1e3]))
def test_positively_homogeneous(entry, j, c):
    # Scales stay above the Gramian normalization threshold (norm_eps) of UPGrad-like methods, below
    # which the Gramian is treated as zero by design (as in TorchJD).
    np.testing.assert_allclose(_apply(entry, c * j), c * _apply(entry, j), rtol=1e-4, atol=1e-7 * c)
