"""Parity of rlw, rgw and uw with TorchJD 0.18 and LibMTL 1.1.5 (float64; skips without torch).

Random weightings are compared draw for draw: torch's RNG is monkeypatched to return mtlx's draws.
Uncertainty weighting is compared on one sequence of loss values: the loss weights at every step and
the log-variances after the last one, with the same optimizer (Adam or SGD) on the log-variances.
"""

import importlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtlx
from tests import references, strategies

torch = references.torch
agg = references.torchjd_aggregation()
scal = references.torchjd_scalarization()

NUM_TASKS = (2, 5, 10)
NUM_STEPS = 12


def _libmtl(name):
    # references.libmtl_weighting cannot be called twice in one process (find_spec fails on its
    # stub package once installed); import from the stub directly when it is there.
    package = sys.modules.get("LibMTL")
    if package is not None and hasattr(package, "_mtlx_stub"):
        return getattr(importlib.import_module(f"LibMTL.weighting.{name}"), name)
    return references.libmtl_weighting(name)


def _normal_draws(seed, num_tasks, num_steps, sampler=jax.random.normal):
    """The raw draws of mtlx's rlw/rgw at each step (one split per step, the 2nd key draws)."""
    key, draws = mtlx.rlw(seed=seed).init(None).key, []
    for _ in range(num_steps):
        key, draw_key = jax.random.split(key)
        draws.append(np.asarray(sampler(draw_key, (num_tasks,))))
    return draws


def _patch_randn(monkeypatch, draws):
    it = iter(draws)

    def randn(*_, **__):
        return torch.tensor(next(it), dtype=torch.float64)

    monkeypatch.setattr(torch, "randn", randn)


@pytest.mark.parametrize("num_tasks", NUM_TASKS)
@pytest.mark.parametrize("seed", [0, 1])
def test_rgw_matches_torchjd_random_aggregator(num_tasks, seed, monkeypatch):
    jac = strategies.random_jacobian(np.random.default_rng(seed), num_tasks, 60, norm_spread=3.0)
    _patch_randn(monkeypatch, _normal_draws(seed, num_tasks, 3))
    tx, aggregator = mtlx.rgw(seed=seed), agg.Random()
    update, state = jax.jit(tx.update), tx.init(None)
    for _ in range(3):
        ours, state = update(jnp.asarray(jac), state)
        theirs = references.to_numpy(aggregator(references.to_torch(jac)))
        references.assert_parity(np.asarray(ours), theirs, cos_min=1 - 1e-12, norm_rtol=1e-10)


def _loss_weights_of_scalarizer(scalarizer, losses):
    """The weights a torch scalarizer puts on each loss: d scalarizer(L) / d L."""
    values = references.to_torch(losses).requires_grad_(True)
    scalarizer(values).backward()
    return references.to_numpy(values.grad)


@pytest.mark.parametrize("num_tasks", NUM_TASKS)
def test_rlw_matches_torchjd_random_scalarizer(num_tasks, monkeypatch):
    _patch_randn(monkeypatch, _normal_draws(3, num_tasks, 3))
    tx, scalarizer = mtlx.rlw(seed=3), scal.Random()
    state = tx.init(None)
    losses = np.linspace(0.5, 2.0, num_tasks)
    for _ in range(3):
        ours, state = tx.update(jnp.eye(num_tasks), state, task_losses=jnp.asarray(losses))
        theirs = _loss_weights_of_scalarizer(scalarizer, losses)
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)


@pytest.mark.parametrize("distribution", ["Normal", "Uniform"])
def test_rlw_matches_libmtl_rlw(distribution, monkeypatch):
    num_tasks = 4
    sampler = {"Normal": jax.random.normal, "Uniform": jax.random.uniform}[distribution]
    draws = iter(_normal_draws(0, num_tasks, 3, sampler))
    dist_class = getattr(torch.distributions, distribution)
    monkeypatch.setattr(dist_class, "sample", lambda self, *a: torch.tensor(next(draws)))
    weighting = _libmtl("RLW")()
    weighting.task_num, weighting.device = num_tasks, "cpu"
    tx = mtlx.rlw(distribution.lower(), seed=0)
    state = tx.init(None)
    for _ in range(3):
        ours, state = tx.update(jnp.eye(num_tasks), state)
        losses = references.to_torch(np.ones(num_tasks)).requires_grad_(True)
        theirs = weighting.backward(losses, dist=distribution)
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def _loss_sequence(num_tasks):
    rng = np.random.default_rng(num_tasks)
    scales = 10.0 ** rng.uniform(-2, 1, size=num_tasks)  # losses over three orders of magnitude
    return scales * rng.uniform(0.5, 1.5, size=(NUM_STEPS, num_tasks))


def _run_ours(tx, loss_sequence):
    num_tasks = loss_sequence.shape[1]
    update, state, weights = jax.jit(tx.update), tx.init(None), []
    for losses in loss_sequence:
        w, state = update(jnp.eye(num_tasks), state, task_losses=jnp.asarray(losses))
        weights.append(np.asarray(w))
    return np.stack(weights), np.asarray(state.log_vars)


def _run_torch(scalarizer, log_var, optimizer, loss_sequence):
    weights = []
    for losses in loss_sequence:
        optimizer.zero_grad()
        weights.append(_loss_weights_of_scalarizer(scalarizer, losses))
        optimizer.step()
    return np.stack(weights), references.to_numpy(log_var)


OPTIMIZERS = {
    "adam": (optax.adam, lambda params, lr: torch.optim.Adam(params, lr=lr)),
    "sgd": (optax.sgd, lambda params, lr: torch.optim.SGD(params, lr=lr)),
}


@pytest.mark.parametrize("num_tasks", NUM_TASKS)
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_uw_matches_torchjd_uw(num_tasks, optimizer):
    ours_opt, torch_opt = OPTIMIZERS[optimizer]
    sequence = _loss_sequence(num_tasks)
    scalarizer = scal.UW(num_tasks).double()
    optimizer = torch_opt(scalarizer.parameters(), 0.05)
    theirs = _run_torch(scalarizer, scalarizer.log_var, optimizer, sequence)
    ours = _run_ours(mtlx.uw(num_tasks, 0.05, optimizer=ours_opt), sequence)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-10)  # loss weights at every step
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-9, atol=1e-12)  # final log-variances


@pytest.mark.parametrize("num_tasks", NUM_TASKS)
def test_uw_matches_libmtl_uw(num_tasks):
    sequence = _loss_sequence(num_tasks)
    weighting = _libmtl("UW")()
    weighting.task_num, weighting.device = num_tasks, "cpu"
    weighting.init_param()
    weighting.double()
    optimizer = torch.optim.Adam(weighting.parameters(), lr=0.05)
    reported, grads = [], []
    for losses in sequence:  # LibMTL's backward builds its objective and backpropagates it
        optimizer.zero_grad()
        values = references.to_torch(losses).requires_grad_(True)
        reported.append(weighting.backward(values))
        grads.append(references.to_numpy(values.grad))
        optimizer.step()
    weights, log_vars = _run_ours(mtlx.uw(num_tasks, 0.05, init_log_var=-0.5), sequence)
    np.testing.assert_allclose(weights, np.stack(grads), rtol=1e-10)
    np.testing.assert_allclose(weights, np.stack(reported), rtol=1e-10)
    theirs = references.to_numpy(weighting.loss_scale)
    np.testing.assert_allclose(log_vars, theirs, rtol=1e-9, atol=1e-12)
