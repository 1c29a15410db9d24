"""Parity of the loss-based weightings with TorchJD's scalarizers and LibMTL's weighting classes.

Every stateful method is run over a multi-step sequence of losses (and Jacobians, where it reads
gradients) in float64, and its weights (or update) are compared at EVERY step with the reference
driven through the same sequence. For a loss-only method the weights are read as the update of the
identity Jacobian (``J = I``: ``sum_t w_t e_t = w``); the reference's weights are the gradient of
its scalarized loss with respect to the loss vector. DB-MTL (not in PyPI's LibMTL 1.1.5) is checked
against a NumPy transcription of LibMTL's ``DB_MTL.backward`` (GitHub), LibMTL's STCH warm-up
likewise. The reference tests skip without torch; the NumPy ones and the cost checks at the end (a
loss-only method traces no per-task gradient: one backward pass) always run.
"""

import functools
import importlib
import sys

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtlx
from tests import strategies

try:
    from tests import references
except pytest.skip.Exception:  # no torch: only the cost tests at the end run
    references = None

torch = None if references is None else references.torch
needs_torch = pytest.mark.skipif(references is None, reason="reference tests need torch")

NUM_TASKS = 3
NUM_STEPS = 8
RTOL = 1e-9


def _loss_sequence(seed, num_steps=NUM_STEPS, num_tasks=NUM_TASKS):
    """Positive losses on different scales that decrease with noise, shape (steps, T)."""
    rng = np.random.default_rng(seed)
    scales = 10.0 ** rng.uniform(-1, 1, num_tasks)
    decay = np.exp(-np.cumsum(rng.uniform(0.0, 0.3, (num_steps, num_tasks)), axis=0))
    return scales * decay * rng.uniform(0.8, 1.2, (num_steps, num_tasks))


def _jacobian_sequence(seed, num_steps=NUM_STEPS, num_tasks=NUM_TASKS, num_params=7):
    rng = np.random.default_rng(seed + 100)
    return np.stack(
        [
            strategies.random_jacobian(rng, num_tasks, num_params, norm_spread=2.0)
            for _ in range(num_steps)
        ]
    )


@functools.cache
def _scan(tx_factory, *args):
    """Jitted scan of a transform over (jacobians, losses): one compile per configuration."""
    tx = tx_factory(*args)

    @jax.jit
    def run(jacs, losses):
        def step(state, inputs):
            jac, loss = inputs
            out, state = tx.update(jac, state, None, task_losses=loss)
            return state, out

        return jax.lax.scan(step, tx.init(jnp.zeros(jacs.shape[2])), (jacs, losses))[1]

    return run


def _ours_weights(factory, losses, *args):
    """Per-step weights of a loss-only method: its updates on the identity Jacobian."""
    jacs = jnp.broadcast_to(jnp.eye(losses.shape[1]), (losses.shape[0],) + (losses.shape[1],) * 2)
    return np.asarray(_scan(factory, *args)(jacs, jnp.asarray(losses)))


def _scalarizer_weights(scalarizer, losses):
    """Gradient of the scalarized loss w.r.t. the loss vector: the weights of sum_t w_t grad L_t."""
    values = references.to_torch(losses).requires_grad_(True)
    scalarizer(values).backward()
    return references.to_numpy(values.grad)


# ---------------------------------------------------------------- TorchJD scalarizers


@needs_torch
@pytest.mark.parametrize("steps_per_epoch", [1, 3])
@pytest.mark.parametrize("seed", [0, 1])
def test_dwa_matches_torchjd_over_epochs(seed, steps_per_epoch):
    sc = references.torchjd_scalarization()
    losses = _loss_sequence(seed, num_steps=12)
    ref = sc.DWA(temperature=2.0)
    expected = []
    for k, loss in enumerate(losses):
        expected.append(_scalarizer_weights(ref, loss))
        if (k + 1) % steps_per_epoch == 0:
            ref.step()
    ours = _ours_weights(mtlx.dwa, losses, NUM_TASKS, 2.0, steps_per_epoch)
    np.testing.assert_allclose(ours, np.stack(expected), rtol=RTOL)
    assert not np.allclose(ours[-1], 1.0)  # the sequence leaves the equal-weight warm-up


@needs_torch
@pytest.mark.parametrize("seed", [0, 1])
def test_gls_matches_torchjd_geometric_mean(seed):
    sc = references.torchjd_scalarization()
    losses = _loss_sequence(seed)
    expected = np.stack([_scalarizer_weights(sc.GeometricMean(), loss) for loss in losses])
    np.testing.assert_allclose(_ours_weights(mtlx.gls, losses), expected, rtol=RTOL)


@needs_torch
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("seed", [0, 1])
def test_imtl_l_matches_torchjd_with_the_same_optimizer(seed, optimizer):
    sc = references.torchjd_scalarization()
    losses = _loss_sequence(seed)
    lr = 0.05
    ref = sc.IMTLL(NUM_TASKS).double()
    torch_optimizer = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[optimizer]
    torch_opt = torch_optimizer(ref.parameters(), lr=lr)
    expected = []
    for loss in losses:
        torch_opt.zero_grad()
        expected.append(_scalarizer_weights(ref, loss))  # also fills the scales' gradient
        torch_opt.step()
    factory = functools.partial(mtlx.imtl_l, optimizer=getattr(optax, optimizer))
    ours = _ours_weights(factory, losses, NUM_TASKS, lr)
    np.testing.assert_allclose(ours, np.stack(expected), rtol=RTOL)
    assert not np.allclose(ours[-1], 1.0)


@needs_torch
@pytest.mark.parametrize("min_losses", [None, (0.01, 0.0, 0.02)])
@pytest.mark.parametrize("seed", [0, 1])
def test_famo_matches_torchjd_over_a_loss_sequence(seed, min_losses):
    """TorchJD: forward(L^k) for the step, update(L^{k+1}) after it; mtlx: update(L^k) each step."""
    sc = references.torchjd_scalarization()
    losses = _loss_sequence(seed, num_steps=10)
    bounds = None if min_losses is None else references.to_torch(min_losses)
    ref = sc.FAMO(NUM_TASKS, min_losses=bounds, lr=0.025, weight_decay=1e-3).double()
    expected = []
    for k, loss in enumerate(losses):
        if k > 0:
            ref.update(references.to_torch(loss))
        expected.append(_scalarizer_weights(ref, loss))
    args = (NUM_TASKS, min_losses, 1e-3, 0.025)
    ours = _ours_weights(_famo_factory, losses, *args)
    np.testing.assert_allclose(ours, np.stack(expected), rtol=1e-8)
    assert np.ptp(ours[-1] * losses[-1]) > 1e-3  # the logits moved away from uniform


def _famo_factory(num_tasks, min_losses, gamma, learning_rate):
    bounds = None if min_losses is None else jnp.asarray(min_losses)
    return mtlx.famo(num_tasks, bounds, gamma, learning_rate)


@needs_torch
@pytest.mark.parametrize(
    "mu, pref, reference",
    [(1.0, None, None), (0.1, None, None), (0.5, (0.2, 0.5, 0.3), (0.01, 0.1, 0.0))],
)
def test_stch_matches_torchjd(mu, pref, reference):
    sc = references.torchjd_scalarization()
    losses = _loss_sequence(0)
    ref = sc.STCH(
        mu,
        weights=None if pref is None else references.to_torch(pref),
        reference=None if reference is None else references.to_torch(reference),
    )
    expected = np.stack([_scalarizer_weights(ref, loss) for loss in losses])
    ours = _ours_weights(_stch_factory, losses, mu, pref, reference)
    np.testing.assert_allclose(ours, expected, rtol=RTOL, atol=1e-300)


def _stch_factory(mu, pref, reference, warmup_steps=0, nadir_steps=None):
    as_array = lambda x: None if x is None else jnp.asarray(x)  # noqa: E731
    return mtlx.stch(
        mu,
        as_array(pref),
        as_array(reference),
        warmup_steps=warmup_steps,
        nadir_steps=nadir_steps,
        num_tasks=NUM_TASKS,
    )


@needs_torch
@pytest.mark.parametrize("theta", [0.0, 5.0])
@pytest.mark.parametrize("reference", [None, (0.01, 0.1, 0.0)])
def test_pbi_matches_torchjd(theta, reference):
    sc = references.torchjd_scalarization()
    losses, pref = _loss_sequence(4), (0.2, 0.5, 0.3)
    ref = sc.PBI(
        theta,
        references.to_torch(pref),
        None if reference is None else references.to_torch(reference),
    )
    expected = np.stack([_scalarizer_weights(ref, loss) for loss in losses])
    ours = _ours_weights(_pbi_factory, losses, pref, theta, reference)
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-12)


def _pbi_factory(pref, theta, reference):
    return mtlx.pbi(jnp.asarray(pref), theta, None if reference is None else jnp.asarray(reference))


@needs_torch
@pytest.mark.parametrize("lambda_", [0.0, 0.5, 8.0])
def test_cosmos_matches_torchjd(lambda_):
    sc = references.torchjd_scalarization()
    losses, pref = _loss_sequence(5), (0.2, 0.5, 0.3)
    ref = sc.COSMOS(lambda_, references.to_torch(pref))
    expected = np.stack([_scalarizer_weights(ref, loss) for loss in losses])
    ours = _ours_weights(_cosmos_factory, losses, pref, lambda_)
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-12)


def _cosmos_factory(pref, lambda_):
    return mtlx.cosmos(jnp.asarray(pref), lambda_)


# ---------------------------------------------------------------- LibMTL weighting classes


@functools.cache
def _libmtl_class(name):
    stub = sys.modules.get("LibMTL")
    if stub is not None and getattr(stub, "_mtlx_stub", False):
        # references.libmtl_weighting calls importlib.util.find_spec("LibMTL"), which raises once
        # its stub package (which has no __spec__) is in sys.modules: import from the stub directly.
        return getattr(importlib.import_module(f"LibMTL.weighting.{name}"), name)
    return references.libmtl_weighting(name)


def _libmtl(name, **attributes):
    """A LibMTL weighting object with the attributes its trainer would set."""
    obj = _libmtl_class(name)()
    obj.task_num, obj.device, obj.rep_grad = NUM_TASKS, torch.device("cpu"), False
    for key, value in attributes.items():
        setattr(obj, key, value)
    return obj


@needs_torch
@pytest.mark.parametrize("seed", [0, 1])
def test_dwa_matches_libmtl(seed):
    steps_per_epoch, epochs = 2, 5
    losses = _loss_sequence(seed, num_steps=steps_per_epoch * epochs)
    ref = _libmtl("DWA", train_loss_buffer=np.zeros((NUM_TASKS, epochs)))
    expected = []
    for epoch in range(epochs):
        ref.epoch = epoch
        for loss in losses[epoch * steps_per_epoch : (epoch + 1) * steps_per_epoch]:
            expected.append(ref.backward(references.to_torch(loss).requires_grad_(True), T=2.0))
        epoch_losses = losses[epoch * steps_per_epoch : (epoch + 1) * steps_per_epoch]
        ref.train_loss_buffer[:, epoch] = epoch_losses.mean(0)
    ours = _ours_weights(mtlx.dwa, losses, NUM_TASKS, 2.0, steps_per_epoch)
    # LibMTL builds its weights with torch.Tensor (float32): compare to float32 precision.
    np.testing.assert_allclose(ours, np.stack(expected), rtol=1e-6)


@needs_torch
def test_gls_matches_libmtl():
    losses = _loss_sequence(2)
    ref = _libmtl("GLS")
    expected = []
    for loss in losses:
        values = references.to_torch(loss).requires_grad_(True)
        ref.backward(values)
        expected.append(references.to_numpy(values.grad))
    np.testing.assert_allclose(_ours_weights(mtlx.gls, losses), np.stack(expected), rtol=RTOL)


class _SharedLinear:
    """A shared parameter theta with losses L_t whose gradients are the rows J_t (LibMTL harness).

    ``losses(J, L)`` returns a tensor with the values L and the Jacobian J with respect to theta,
    so a LibMTL weighting's per-task backward passes see exactly (J, L).
    """

    def __init__(self, num_params):
        self.theta = torch.zeros(num_params, dtype=torch.float64, requires_grad=True)
        self.theta.grad = torch.zeros_like(self.theta)

    def attach(self, obj):
        obj.get_share_params = lambda: [self.theta]
        obj.zero_grad_share_params = lambda: self.theta.grad.zero_()

    def losses(self, jac, values):
        linear = references.to_torch(jac) @ self.theta
        return linear - linear.detach() + references.to_torch(values)


@pytest.fixture
def float64_default():
    """LibMTL allocates its gradient buffers with the default dtype: make it float64."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _ours_updates(factory, jacs, losses, *args):
    return np.asarray(_scan(factory, *args)(jnp.asarray(jacs), jnp.asarray(losses)))


@needs_torch
@pytest.mark.parametrize("warmup_steps", [0, 2])
@pytest.mark.parametrize("seed", [0, 1])
def test_gradnorm_matches_libmtl(seed, warmup_steps, float64_default):
    """LibMTL warms up for one epoch (here warmup_steps updates) and learns the logits with Adam."""
    jacs, losses = _jacobian_sequence(seed), _loss_sequence(seed)
    lr, alpha = 0.05, 1.5
    harness = _SharedLinear(jacs.shape[2])
    ref = _libmtl("GradNorm", train_loss_buffer=np.zeros((NUM_TASKS, 2)))
    ref.init_param()
    harness.attach(ref)
    torch_opt = torch.optim.Adam([ref.loss_scale], lr=lr)
    expected = []
    for k, (jac, loss) in enumerate(zip(jacs, losses)):
        ref.epoch = 0 if k < warmup_steps else 1
        if k == max(warmup_steps, 1) - 1:  # L(0): the first update's losses, or the warm-up's mean
            ref.train_loss_buffer[:, 0] = losses[: max(warmup_steps, 1)].mean(0)
        torch_opt.zero_grad()
        harness.theta.grad.zero_()
        ref.backward(harness.losses(jac, loss), alpha=alpha)
        if ref.epoch == 0:  # LibMTL's warm-up backpropagates the plain sum of the losses
            expected.append(jac.sum(0))
        else:
            expected.append(references.to_numpy(harness.theta.grad))
        torch_opt.step()
    factory = functools.partial(mtlx.gradnorm, warmup_steps=warmup_steps)
    ours = _ours_updates(factory, jacs, losses, NUM_TASKS, alpha, lr)
    np.testing.assert_allclose(ours, np.stack(expected), rtol=1e-8, atol=1e-12)
    assert not np.allclose(ours[-1], jacs[-1].sum(0))  # the weights moved


@needs_torch
@pytest.mark.parametrize("seed", [0, 1])
def test_imtl_matches_libmtl(seed, float64_default):
    jacs, losses = _jacobian_sequence(seed), _loss_sequence(seed)
    lr = 0.05
    harness = _SharedLinear(jacs.shape[2])
    ref = _libmtl("IMTL")
    ref.init_param()
    harness.attach(ref)
    torch_opt = torch.optim.Adam([ref.loss_scale], lr=lr)
    expected = []
    for jac, loss in zip(jacs, losses):
        torch_opt.zero_grad()
        harness.theta.grad.zero_()
        ref.backward(harness.losses(jac, loss))
        expected.append(references.to_numpy(harness.theta.grad))
        torch_opt.step()
    ours = _ours_updates(mtlx.imtl, jacs, losses, NUM_TASKS, lr)
    references.assert_parity(ours, np.stack(expected), cos_min=1 - 1e-9, norm_rtol=1e-7)
    for o, e in zip(ours, expected):
        np.testing.assert_allclose(o, e, rtol=1e-6, atol=1e-9)


def _db_mtl_reference(jacs, losses, beta, beta_sigma):
    """NumPy transcription of LibMTL's DB_MTL.backward (GitHub median-research-group/LibMTL)."""
    buffer = np.zeros_like(jacs[0])
    updates = []
    for step, (jac, loss) in enumerate(zip(jacs, losses), start=1):
        batch_grads = jac / (loss + 1e-8)[:, None]  # grad log(L_t + 1e-8)
        buffer = batch_grads + (beta / step**beta_sigma) * (buffer - batch_grads)
        u = np.linalg.norm(buffer, axis=1)
        alpha = u.max() / (u + 1e-8)
        updates.append(alpha @ buffer)
    return np.stack(updates)


@pytest.mark.parametrize("beta, beta_sigma", [(0.9, 0.0), (0.5, 0.5)])
def test_db_mtl_matches_libmtl_formula(beta, beta_sigma):
    jacs, losses = _jacobian_sequence(3), _loss_sequence(3)
    ours = _ours_updates(mtlx.db_mtl, jacs, losses, NUM_TASKS, beta, beta_sigma)
    np.testing.assert_allclose(ours, _db_mtl_reference(jacs, losses, beta, beta_sigma), rtol=1e-10)


def _stch_libmtl_reference(losses, mu, warmup_epoch, steps_per_epoch):
    """NumPy transcription of LibMTL's STCH.backward (GitHub; not in PyPI's LibMTL 1.1.5).

    Its loss: sum_t log(L_t + 1e-20) during epochs <= warmup_epoch (the last of which averages the
    losses into the nadir point), then T mu logsumexp(log(L / nadir + 1e-20) / mu). Returned: the
    gradients of that loss w.r.t. L, worked out by hand.
    """
    num_tasks, total, count, nadir, weights = losses.shape[1], 0.0, 0, None, []
    for k, loss in enumerate(losses):
        epoch = k // steps_per_epoch
        if epoch <= warmup_epoch:
            if epoch == warmup_epoch:
                total, count = total + loss, count + 1
            weights.append(1.0 / (loss + 1e-20))
            continue
        nadir = total / count if nadir is None else nadir
        f = np.log(loss / nadir + 1e-20)
        p = np.exp((f - f.max()) / mu)
        p /= p.sum()
        weights.append(num_tasks * p / (loss + 1e-20 * nadir))
    return np.stack(weights)


@pytest.mark.parametrize("seed", [0, 1])
def test_stch_warmup_matches_libmtl_formula(seed):
    steps_per_epoch, warmup_epoch, epochs = 2, 1, 4
    losses = _loss_sequence(seed, num_steps=steps_per_epoch * epochs)
    mu = 0.5
    warmup_steps = (warmup_epoch + 1) * steps_per_epoch
    ours = _ours_weights(
        _stch_factory, losses, mu, (1.0,) * NUM_TASKS, None, warmup_steps, steps_per_epoch
    )
    # LibMTL's STCH loss is T times ours with pref_vector = 1 (see mtlx.stch's note).
    ours = np.where(np.arange(len(losses))[:, None] < warmup_steps, ours, NUM_TASKS * ours)
    expected = _stch_libmtl_reference(losses, mu, warmup_epoch, steps_per_epoch)
    np.testing.assert_allclose(ours, expected, rtol=1e-9)


# ---------------------------------------------------------------- cost: one backward pass


def _step_shapes(tx):
    """Shapes of every intermediate of one engine + transform step on a (8, 6) weight, T = 3."""
    x = jnp.linspace(-1.0, 1.0, 40).reshape(5, 8)
    params = {"w": jnp.full((8, 6), 0.1), "heads": jnp.ones((NUM_TASKS, 6))}

    def loss_fn(p, x):
        return jnp.mean((jnp.tanh(x @ p["w"]) @ p["heads"].T - 0.5) ** 2, axis=0) + 0.1

    engine = mtlx.value_and_jacobian(loss_fn, shared={"w": True, "heads": False})

    def step(params):
        losses, jac = engine(params, x)
        return tx.update(jac, tx.init(params), params, task_losses=losses)[0]

    jaxpr = jax.make_jaxpr(step)(params)

    def eqn_shapes(eqns):
        for eqn in eqns:
            yield from (tuple(v.aval.shape) for v in eqn.outvars if hasattr(v.aval, "shape"))
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                yield from eqn_shapes(sub.eqns)

    return set(eqn_shapes(jaxpr.eqns))


LOSS_ONLY = {
    "dwa": lambda: mtlx.dwa(NUM_TASKS),
    "gls": mtlx.gls,
    "imtl_l": lambda: mtlx.imtl_l(NUM_TASKS),
    "famo": lambda: mtlx.famo(NUM_TASKS),
    "stch": mtlx.stch,
    "stch_warmup": lambda: mtlx.stch(warmup_steps=2, num_tasks=NUM_TASKS),
    "pbi": lambda: mtlx.pbi(jnp.ones(NUM_TASKS)),
    "cosmos": lambda: mtlx.cosmos(jnp.ones(NUM_TASKS)),
}
READS_ROWS = {
    "gradnorm": lambda: mtlx.gradnorm(NUM_TASKS),
    "imtl": lambda: mtlx.imtl(NUM_TASKS),
    "db_mtl": lambda: mtlx.db_mtl(NUM_TASKS),
}


@pytest.mark.parametrize("name", list(LOSS_ONLY))
def test_loss_only_methods_cost_one_backward_pass(name):
    """No (T, 8, 6) intermediate: no per-task gradient of the shared weight is ever traced."""
    assert (NUM_TASKS, 8, 6) not in _step_shapes(LOSS_ONLY[name]())


@pytest.mark.parametrize("name", list(READS_ROWS))
def test_gradient_methods_read_the_rows(name):
    """The contrast that makes the check above meaningful: T batched backward passes."""
    assert (NUM_TASKS, 8, 6) in _step_shapes(READS_ROWS[name]())
