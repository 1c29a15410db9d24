"""Hypothesis strategies for task Jacobians (TorchJD's matrix samplers, as strategies)."""

import hypothesis.strategies as st
import numpy as np

TASKS, PARAMS = (1, 2, 3, 5), (1, 4, 9)  # few shapes: every new shape is a new XLA compile


def random_jacobian(rng, t, p, rank=None, *, norm_spread=0.0):
    """A (T, P) float64 matrix of the given rank; row norms spread over 10**norm_spread."""
    rank = min(t, p) if rank is None else rank
    u = np.linalg.qr(rng.standard_normal((t, t)))[0][:, :rank]
    v = np.linalg.qr(rng.standard_normal((p, p)))[0][:rank]
    j = u @ np.diag(np.abs(rng.standard_normal(rank)) + 0.1) @ v
    if norm_spread:
        j = j * 10.0 ** rng.uniform(0, norm_spread, size=(t, 1))
    return j


@st.composite
def jacobians(draw, tasks=TASKS, params=PARAMS, nonnegative=False, full_rank=False):
    """(T, P) float64 matrices of drawn rank; entries come from a drawn seed (fast to shrink)."""
    t, p = draw(st.sampled_from(tasks)), draw(st.sampled_from(params))
    rank = min(t, p) if full_rank else draw(st.integers(0, min(t, p)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    j = random_jacobian(rng, t, p, rank)
    return np.abs(j) if nonnegative else j


def as_pytree(j):
    """The columns of j as a dict of task-stacked leaves of different ranks."""
    t, p = j.shape
    return {"w": j[:, : p // 2].reshape(t, p // 2, 1), "b": (j[:, p // 2 :],)}


def flatten_pytree(out):
    return np.concatenate([np.ravel(out["w"]), np.ravel(out["b"][0])])
