"""mtlx.cagrad: the dual solver's optimality, CAGrad's guarantee, and parity with LibMTL."""

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtlx
from mtlx._src import solvers
from tests import references, strategies

J_BASE = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])


# One jitted function, c traced: hypothesis and the parameter grids vary data, not closures.
_WEIGHTS = jax.jit(mtlx.cagrad_weights, static_argnames=("rescale",))
_DUAL = jax.jit(solvers.cagrad_dual)


def _update(j, c, rescale=0):
    j = np.asarray(j)
    return np.asarray(_WEIGHTS(jnp.asarray(j @ j.T), c, rescale=rescale)) @ j


@pytest.mark.parametrize("rescale, rho", [(0, 1.0), (1, 1.25), (2, 1.5)])
def test_known_weights_and_rescale_conventions(rescale, rho):
    """TorchJD's CAGradWeighting(c=0.5) on G_BASE is [0.7041, 0.5]; rescale divides by rho."""
    weights = mtlx.cagrad_weights(jnp.asarray(J_BASE @ J_BASE.T), 0.5, rescale=rescale)
    np.testing.assert_allclose(weights * rho, [0.7041, 0.5], atol=1e-4)


@hypothesis.given(j=strategies.jacobians(tasks=(2, 3, 5)))
def test_c_zero_is_the_mean(j):
    out = _update(j, 0.0)
    np.testing.assert_allclose(out, j.mean(0) if np.trace(j @ j.T) >= 1e-4 else 0.0, atol=1e-9)


@hypothesis.given(j=strategies.jacobians(tasks=(3, 5), params=(4, 9)), seed=st.integers(0, 99))
def test_dual_solution_beats_every_simplex_point(j, seed):
    """w* minimises g_w^T g0 + c ||g0|| ||g_w|| over the simplex: no sampled point does better."""
    g = j @ j.T
    g = g / max(np.trace(g), 1e-300)
    t = g.shape[0]
    b = np.full(t, 1.0 / t)
    radius = 0.5 * np.sqrt(max(b @ g @ b, 0.0))
    hypothesis.assume(radius > 1e-6)
    w = np.asarray(_DUAL(jnp.asarray(g), jnp.asarray(radius)))
    np.testing.assert_allclose(w.sum(), 1.0, atol=1e-12)
    assert np.all(w >= 0)

    def objective(v):
        return v @ g @ b + radius * np.sqrt(max(v @ g @ v, 0.0))

    rng = np.random.default_rng(seed)
    candidates = np.concatenate([np.eye(t), rng.dirichlet(np.full(t, 0.3), size=200)])
    best = min(objective(v) for v in candidates)
    assert objective(w) <= best + 1e-10, (objective(w), best)


@hypothesis.given(j=strategies.jacobians(tasks=(2, 3, 5)), c=st.sampled_from([0.2, 0.5, 2.0]))
def test_worst_task_improves_at_least_as_much_as_with_the_mean(j, c):
    """d* maximises min_t <g_t, d> over a ball that holds g0, so it beats g0 on the worst task."""
    hypothesis.assume(np.trace(j @ j.T) >= 1e-4)
    out = _update(j, c)
    worst, worst_mean = (j @ out).min(), (j @ j.mean(0)).min()
    assert worst >= worst_mean - 1e-9 * (1 + np.abs(j).max() ** 2), (worst, worst_mean)
    # and d* stays in the ball ||d - g0|| <= c ||g0|| (on it, unless at a Pareto-stationary point)
    g0 = j.mean(0)
    assert np.linalg.norm(out - g0) <= c * np.linalg.norm(g0) * (1 + 1e-6) + 1e-12


def test_pareto_stationary_point_gives_zero_update():
    """The dual's minimiser has g_w* = 0 (here: a zero row, every other row agrees with g0):
    TorchJD's convention (and ours) is a zero update, not the mean."""
    j = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [2.0, -1.0, 0.5]])
    np.testing.assert_allclose(_update(j, 0.5), 0.0, atol=1e-12)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="rescale"):
        mtlx.cagrad(rescale=3)
    with pytest.raises(ValueError, match="c must be"):
        mtlx.cagrad(c=-0.1)


class _LibMTLCAGrad:
    """LibMTL's CAGrad.backward, driven with given gradients instead of backward passes."""

    def __new__(cls, grads):
        base = references.libmtl_weighting("CAGrad")

        class Fake(base):
            def _compute_grad_dim(self):
                pass

            def _compute_grad(self, losses, mode, rep_grad=False):
                return self.grads

            def _reset_grad(self, new_grads):
                self.update = new_grads

        fake = Fake()
        fake.grads, fake.task_num, fake.device, fake.rep_grad = grads, grads.shape[0], "cpu", False
        return fake


@pytest.mark.parametrize("rescale", [0, 1, 2])
def test_matches_libmtl(rescale):
    """LibMTL 1.1.5 hard-codes 3 tasks (``x.reshape(1, 3)``) and solves the dual with SLSQP on the
    raw Gramian; on rows whose norms spread one order of magnitude it converges, and we match it.
    (With three orders its SLSQP can stop at its start point: see test_libmtl_solver_is_inexact.)"""
    for seed, calpha in enumerate([0.2, 0.5, 1.0, 0.5, 0.5, 2.0]):
        j = strategies.random_jacobian(np.random.default_rng(seed), 3, 20, norm_spread=1.0)
        libmtl = _LibMTLCAGrad(references.to_torch(j))
        libmtl.backward(None, calpha=calpha, rescale=rescale)
        references.assert_parity(_update(j, calpha, rescale), references.to_numpy(libmtl.update))


def test_libmtl_solver_is_inexact_where_ours_is_not():
    """Norms over three orders of magnitude: LibMTL's SLSQP stays at the uniform start (objective
    5.3e4), our dual solution reaches 94.29, the minimum (TorchJD's CLARABEL agrees)."""
    j = strategies.random_jacobian(np.random.default_rng(3), 3, 60, norm_spread=3.0)
    libmtl = _LibMTLCAGrad(references.to_torch(j))
    w_libmtl = libmtl.backward(None, calpha=0.5, rescale=1)
    g, b = j @ j.T, np.full(3, 1.0 / 3)
    c = 0.5 * np.sqrt(g.mean() + 1e-8)

    def objective(x):
        return x @ g @ b + c * np.sqrt(x @ g @ x + 1e-8)

    gn = g / np.trace(g)
    w_ours = np.asarray(_DUAL(jnp.asarray(gn), jnp.asarray(0.5 * np.sqrt(b @ gn @ b))))
    assert objective(w_ours) < 0.01 * objective(w_libmtl)
    agg = references.torchjd_aggregation()
    theirs = references.to_numpy(agg.CAGrad(c=0.5)(references.to_torch(j)))
    references.assert_parity(_update(j, 0.5, rescale=0), theirs)
