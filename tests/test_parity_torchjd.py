"""Numerical parity with TorchJD 0.18 (float64, random Jacobians, T from 2 to 40).

Rows have norms spread over 3 orders of magnitude. Each case checks cosine >= 0.999 and norm within
1% of TorchJD's aggregation, with the same hyperparameters and convention. Skips without torch.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtlx
from tests import references, strategies

agg = references.torchjd_aggregation()
torch = references.torch

NUM_TASKS = (2, 5, 10, 40)
NUM_PARAMS = 60


def _jacobian(num_tasks, seed):
    rng = np.random.default_rng(seed)
    return strategies.random_jacobian(rng, num_tasks, NUM_PARAMS, norm_spread=3.0)


def _ours(tx, jac, losses=None, state=None):
    state = tx.init(jnp.zeros(jac.shape[1])) if state is None else state
    extra = {} if losses is None else {"task_losses": jnp.asarray(losses)}
    return np.asarray(jax.jit(tx.update)(jnp.asarray(jac), state, None, **extra)[0])


def _theirs(aggregator, jac):
    return references.to_numpy(aggregator(references.to_torch(jac)))


# (id, mtlx factory, TorchJD aggregator factory, cosine bound)
CASES = [
    ("mean", lambda t: mtlx.mean(), lambda t: agg.Mean()),
    ("ew", lambda t: mtlx.ew(), lambda t: agg.Sum()),
    ("scalarization", lambda t: mtlx.scalarization(jnp.linspace(0.1, 2.0, t)),
     lambda t: agg.Constant(torch.linspace(0.1, 2.0, t, dtype=torch.float64))),
    ("mgda", lambda t: mtlx.mgda(), lambda t: agg.MGDA()),
    ("upgrad", lambda t: mtlx.upgrad(), lambda t: agg.UPGrad()),
]


@pytest.mark.parametrize("num_tasks", NUM_TASKS)
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_matches_torchjd(case, num_tasks, seed):
    _, ours_fn, theirs_fn = case
    jac = _jacobian(num_tasks, seed)
    references.assert_parity(_ours(ours_fn(num_tasks), jac), _theirs(theirs_fn(num_tasks), jac))


@pytest.mark.parametrize("num_tasks", NUM_TASKS)
@pytest.mark.parametrize("seed", [0, 1])
def test_pcgrad_matches_torchjd_with_the_same_task_orders(num_tasks, seed, monkeypatch):
    """TorchJD draws each task's order with torch.randperm: feed it mtlx's orders."""
    jac = _jacobian(num_tasks, seed)
    tx = mtlx.pcgrad(seed=seed)
    state = tx.init(None)
    _, key = jax.random.split(state.key)
    orders = [np.asarray(jax.random.permutation(k, num_tasks)) for k in jax.random.split(key, num_tasks)]
    it = iter(orders)
    monkeypatch.setattr(torch, "randperm", lambda n, **kw: torch.as_tensor(next(it)))
    references.assert_parity(_ours(tx, jac, state=state), _theirs(agg.PCGrad(), jac))
