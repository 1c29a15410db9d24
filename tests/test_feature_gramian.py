"""value_and_jacobian_through_features(..., gramian="features"): the feature-space Gramian mode.

A different (cheaper) algorithm than the parameter-space one: the Gramian is that of the per-task
gradients with respect to the shared features Z, the update one encoder backward pass of
``sum_t w_t L_t`` (MGDA-UB, Sener & Koltun 2018; LibMTL's ``rep_grad=True``). Checked here: the
Gramian against ``jax.jacrev`` on the features, ``combine`` against ``jax.grad``, every Gramian
method against its weights from the feature Gramian, the jaxpr's single encoder backward pass,
and parity with LibMTL 1.1.5.
"""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtlx
from tests import methods_under_test

T, B, D_IN, HIDDEN, FEATURES = 4, 8, 5, 7, 6


def _model(seed=0, num_tasks=T, batch=B):
    rng = np.random.default_rng(seed)
    params = {
        "encoder": {
            "w1": jnp.asarray(rng.standard_normal((D_IN, HIDDEN)) / np.sqrt(D_IN)),
            "b1": jnp.asarray(0.1 * rng.standard_normal(HIDDEN)),
            "w2": jnp.asarray(rng.standard_normal((HIDDEN, FEATURES)) / np.sqrt(HIDDEN)),
            "b2": jnp.asarray(0.1 * rng.standard_normal(FEATURES)),
        },
        "heads": {
            "w": jnp.asarray(rng.standard_normal((num_tasks, FEATURES))),
            "b": jnp.asarray(0.1 * rng.standard_normal(num_tasks)),
        },
    }
    x = jnp.asarray(rng.standard_normal((batch, D_IN)))
    y = jnp.asarray(rng.standard_normal((batch, num_tasks)))
    return params, x, y


def _encoder(p, x, *unused_targets):
    hidden = jnp.tanh(x @ p["w1"] + p["b1"])
    return jnp.tanh(hidden @ p["w2"] + p["b2"])


def _heads(h, features, x, y):
    del x
    preds = features @ h["w"].T + h["b"]
    return jnp.mean((preds - y) ** 2, axis=0)


def _loss_fn(p, x, y):
    return _heads(p["heads"], _encoder(p["encoder"], x), x, y)


FEATURE_ENGINE = mtlx.value_and_jacobian_through_features(_encoder, _heads, gramian="features")
PARAMS_ENGINE = mtlx.value_and_jacobian_through_features(_encoder, _heads)


def _feature_gramian_by_hand(params, x, y):
    features = _encoder(params["encoder"], x)
    j_z = jax.jacrev(lambda z: _heads(params["heads"], z, x, y))(features)  # (T, B, F)
    j_z = np.asarray(j_z).reshape(j_z.shape[0], -1)
    return j_z @ j_z.T


def _values(a):
    if jnp.issubdtype(jnp.asarray(a).dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(a))
    return np.asarray(a)


def _assert_trees_close(actual, expected, rtol=1e-10, atol=1e-12):
    jax.tree.map(
        lambda a, e: np.testing.assert_allclose(_values(a), _values(e), rtol=rtol, atol=atol),
        actual,
        expected,
    )


# ------------------------------------------------------------------------------ the Jacobian


def test_rejects_an_unknown_gramian_mode():
    with pytest.raises(ValueError, match="'params' or 'features'"):
        mtlx.value_and_jacobian_through_features(_encoder, _heads, gramian="encoder")


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_feature_gramian_is_jz_jz_transpose(chunk_size):
    params, x, y = _model()
    engine = mtlx.value_and_jacobian_through_features(
        _encoder, _heads, gramian="features", chunk_size=chunk_size
    )
    losses, jac = jax.jit(engine)(params, x, y)
    assert isinstance(jac, mtlx.FeatureJacobian)
    np.testing.assert_allclose(losses, _loss_fn(params, x, y), rtol=1e-12)
    gramian = jax.jit(lambda j: j.gramian())(jac)
    expected = _feature_gramian_by_hand(params, x, y)
    np.testing.assert_allclose(gramian, expected, rtol=1e-10, atol=1e-12)
    # A different quantity from the parameter-space Gramian (so the tests below are not vacuous).
    _, params_jac = PARAMS_ENGINE(params, x, y)
    assert not np.allclose(params_jac.gramian(), expected, rtol=1e-2)


def test_feature_gramian_accumulates_in_float32():
    params, x, y = _model()
    params, x, y = jax.tree.map(lambda a: a.astype(jnp.bfloat16), (params, x, y))
    _, jac = jax.jit(FEATURE_ENGINE)(params, x, y)
    gramian = jac.gramian()
    assert gramian.dtype == jnp.float32
    expected = _feature_gramian_by_hand(
        *jax.tree.map(lambda a: a.astype(jnp.float32), (params, x, y))
    )
    np.testing.assert_allclose(gramian, expected, rtol=0.1, atol=1e-3)


def test_rows_are_the_exact_parameter_rows():
    params, x, y = _model()
    _, jac = jax.jit(FEATURE_ENGINE)(params, x, y)
    rows = jac.rows()
    for t in range(T):
        grad_t = jax.grad(lambda p, t=t: _loss_fn(p, x, y)[t])(params)
        _assert_trees_close(jax.tree.map(lambda r, t=t: r[t], rows), grad_t)
    assert jac.shared_mask == (True,) * 4 + (False,) * 2
    _assert_trees_close(jac.materialize().rows(), rows)


@pytest.mark.parametrize("task_specific", ["own", "weighted", "array"])
def test_combine_is_the_gradient_of_the_weighted_loss(task_specific):
    """Encoder: grad of sum_t w_t L_t; heads as LinearizedJacobian.combine treats them."""
    params, x, y = _model()
    _, jac = FEATURE_ENGINE(params, x, y)
    _, params_jac = PARAMS_ENGINE(params, x, y)
    w = jnp.array([0.2, -1.0, 3.0, 0.7])
    head_w = {"own": jnp.ones(T), "weighted": w, "array": jnp.array([1.5, 0.0, -2.0, 0.3])}
    mode = head_w["array"] if task_specific == "array" else task_specific
    out = jax.jit(lambda j: j.combine(w, mode))(jac)
    enc = jax.grad(lambda p: jnp.dot(w, _loss_fn(p, x, y)))(params)["encoder"]
    heads = jax.grad(lambda p: jnp.dot(head_w[task_specific], _loss_fn(p, x, y)))(params)["heads"]
    _assert_trees_close(out, {"encoder": enc, "heads": heads})
    _assert_trees_close(out, params_jac.combine(w, mode))


def test_default_is_the_parameter_space_jacobian():
    params, x, y = _model()
    _, jac = mtlx.value_and_jacobian_through_features(_encoder, _heads)(params, x, y)
    assert type(jac) is mtlx.LinearizedJacobian


def test_a_transform_before_the_weighting_is_caught():
    params, x, y = _model()
    _, jac = FEATURE_ENGINE(params, x, y)
    tx = optax.chain(optax.scale(0.5), mtlx.mgda())
    with pytest.raises(ValueError, match="leaf-wise transform"):
        tx.update(jac, tx.init(params), params)


# ------------------------------------------------------------------------------ the methods

GRAMIAN_METHODS = [e for e in methods_under_test.entries() if e["gramian"]]


@pytest.mark.parametrize("entry", GRAMIAN_METHODS, ids=[e["name"] for e in GRAMIAN_METHODS])
def test_every_gramian_method_uses_the_feature_gramian(entry):
    """Inside jit, the update is the method's weights from G_Z combined through the encoder VJP:
    the parameter-space Jacobian handed ``gramian=G_Z`` combines the same weights (linearity)."""
    assert T >= entry["min_tasks"]
    params, x, y = _model()
    tx = methods_under_test.make(entry, T)
    state = tx.init(params)

    @jax.jit
    def feature_step(params, state):
        losses, jac = FEATURE_ENGINE(params, x, y)
        return tx.update(jac, state, params, task_losses=losses)

    @jax.jit
    def reference_step(params, state):
        losses, jac = PARAMS_ENGINE(params, x, y)
        _, feature_jac = FEATURE_ENGINE(params, x, y)
        gramian = feature_jac.gramian()
        return tx.update(jac, state, params, task_losses=losses, gramian=gramian)

    updates, new_state = feature_step(params, state)
    expected, expected_state = reference_step(params, state)
    _assert_trees_close(updates, expected, rtol=1e-7, atol=1e-9)
    _assert_trees_close(new_state, expected_state, rtol=1e-7, atol=1e-9)
    assert all(np.all(np.isfinite(u)) for u in jax.tree.leaves(updates))


def test_mgda_update_is_its_feature_weights_through_one_encoder_vjp():
    params, x, y = _model()
    losses, jac = FEATURE_ENGINE(params, x, y)
    tx = mtlx.mgda()
    updates, _ = jax.jit(lambda j: tx.update(j, tx.init(params), params))(jac)
    w = mtlx.mgda_weights(jnp.asarray(_feature_gramian_by_hand(params, x, y)))
    enc = jax.grad(lambda p: jnp.dot(w, _loss_fn(p, x, y)))(params)["encoder"]
    heads = jax.grad(lambda p: jnp.sum(_loss_fn(p, x, y)))(params)["heads"]
    _assert_trees_close(updates, {"encoder": enc, "heads": heads}, rtol=1e-8, atol=1e-10)
    # ... which is not parameter-space MGDA.
    _, params_jac = PARAMS_ENGINE(params, x, y)
    params_updates, _ = tx.update(params_jac, tx.init(params), params)
    assert not np.allclose(params_updates["encoder"]["w1"], updates["encoder"]["w1"], rtol=1e-3)


def _train_step(tx):
    def step(params, state, x, y):
        losses, jac = FEATURE_ENGINE(params, x, y)
        updates, state = tx.update(jac, state, params, task_losses=losses)
        return optax.apply_updates(params, updates), state, losses

    return step


def test_scan_and_chain():
    params, x, y = _model()
    tx = optax.chain(mtlx.upgrad(), optax.adam(1e-2))
    step = _train_step(tx)

    def body(carry, _):
        params, state = carry
        params, state, losses = step(params, state, x, y)
        return (params, state), losses

    (scanned, _), losses = jax.jit(lambda p, s: jax.lax.scan(body, (p, s), length=5))(
        params, tx.init(params)
    )
    looped, state = params, tx.init(params)
    for _ in range(5):
        looped, state, _ = jax.jit(step)(looped, state, x, y)
    _assert_trees_close(scanned, looped, rtol=1e-9, atol=1e-11)
    assert losses[-1].sum() < losses[0].sum()


def test_vmap_over_problems():
    problems = [_model(seed) for seed in (0, 1)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *problems)
    tx = optax.chain(mtlx.mgda(), optax.sgd(0.1))
    step = _train_step(tx)
    init = jax.vmap(tx.init)(stacked[0])
    batched, _, _ = jax.jit(jax.vmap(step))(stacked[0], init, stacked[1], stacked[2])
    for i, (params, x, y) in enumerate(problems):
        single, _, _ = jax.jit(step)(params, tx.init(params), x, y)
        _assert_trees_close(jax.tree.map(lambda a, i=i: a[i], batched), single)


def test_random_row_weights_wraps_the_feature_jacobian():
    params, x, y = _model()
    losses, jac = FEATURE_ENGINE(params, x, y)
    rw = mtlx.random_row_weights(seed=3)
    scaled, _ = rw.update(jac, rw.init(params), params)
    assert isinstance(scaled.base, mtlx.FeatureJacobian)
    scales = scaled.scales
    np.testing.assert_allclose(
        scaled.gramian(), jac.gramian() * np.outer(scales, scales), rtol=1e-12
    )
    tx = optax.chain(mtlx.random_row_weights(seed=3), mtlx.mgda())
    updates, _ = jax.jit(lambda j: tx.update(j, tx.init(params), params, task_losses=losses))(jac)
    w = mtlx.mgda_weights(scaled.gramian())
    _assert_trees_close(updates, jac.combine(scales * w, scales), rtol=1e-8, atol=1e-10)


# ------------------------------------------------------------------------------ laziness


def _encoder_gradient_sizes(jaxpr) -> list[int]:
    """Output sizes of the dot_generals that produce an encoder weight's gradient: those that
    contract the batch axis (size B, distinct from every other size) into a weight's shape."""
    weight_shapes = {(D_IN, HIDDEN), (HIDDEN, D_IN), (HIDDEN, FEATURES), (FEATURES, HIDDEN)}
    sizes = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            shape = tuple(eqn.outvars[0].aval.shape)
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            lhs_shape = eqn.invars[0].aval.shape
            contracted = tuple(lhs_shape[d] for d in lhs_contract)
            if shape[-2:] in weight_shapes and contracted == (B,):
                sizes.append(int(np.prod(shape)))
        for sub in _sub_jaxprs(eqn.params):
            sizes += _encoder_gradient_sizes(sub)
    return sizes


def _sub_jaxprs(params):
    for value in params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, jax.extend.core.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, jax.extend.core.Jaxpr):
                yield item


def _step_jaxpr(engine, tx):
    params, x, y = _model()

    def step(params, state):
        losses, jac = engine(params, x, y)
        return tx.update(jac, state, params, task_losses=losses)

    return jax.make_jaxpr(jax.jit(step))(params, tx.init(params)).jaxpr


def test_feature_mgda_step_has_one_encoder_backward_pass():
    """The jaxpr of a jitted feature-mode MGDA step pulls the encoder back once, as EW's does;
    the parameter-space MGDA step pulls back T rows (batched weight-gradient dot_generals)."""
    ew = _encoder_gradient_sizes(_step_jaxpr(PARAMS_ENGINE, mtlx.ew()))
    features = _encoder_gradient_sizes(_step_jaxpr(FEATURE_ENGINE, mtlx.mgda()))
    params_space = _encoder_gradient_sizes(_step_jaxpr(PARAMS_ENGINE, mtlx.mgda()))
    one_pass = D_IN * HIDDEN + HIDDEN * FEATURES
    assert sum(ew) == one_pass and len(ew) == 2
    assert features == ew
    assert sum(params_space) == T * one_pass


# ------------------------------------------------------------------------------ LibMTL parity

try:
    import torch
except ImportError:  # the parity tests skip (the float64_torch fixture)
    torch = None


class _TorchModel:
    """The JAX model's encoder and heads in torch float64, with the same weights."""

    def __init__(self, params, x, y):
        to = lambda a: torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=True)  # noqa: E731
        self.encoder = {k: to(v) for k, v in params["encoder"].items()}
        self.heads = {k: to(v) for k, v in params["heads"].items()}
        self.x = torch.tensor(np.asarray(x), dtype=torch.float64)
        self.y = torch.tensor(np.asarray(y), dtype=torch.float64)

    def features(self):
        p = self.encoder
        return torch.tanh(torch.tanh(self.x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"])

    def loss(self, t, features):
        pred = features @ self.heads["w"][t] + self.heads["b"][t]
        return torch.mean((pred - self.y[:, t]) ** 2)

    def grads(self):
        out = {"encoder": dict(self.encoder), "heads": dict(self.heads)}
        return jax.tree.map(lambda p: p.grad.detach().numpy().copy(), out)


@pytest.fixture
def float64_torch():
    pytest.importorskip("torch", reason="LibMTL parity needs torch")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # LibMTL allocates its buffers in the default dtype
    yield
    torch.set_default_dtype(previous)


def _libmtl(name, model, num_tasks, **attributes):
    from tests import references

    obj = references.libmtl_weighting(name)()
    obj.task_num, obj.device, obj.task_name = num_tasks, torch.device("cpu"), list(range(num_tasks))
    for key, value in attributes.items():
        setattr(obj, key, value)
    return obj


def _libmtl_rep_grad_mgda(params, x, y, normalization):
    """LibMTL's MGDA with rep_grad=True, as its trainer drives it: each head reads its own
    detached copy of the representation (``AbsArchitecture._prepare_rep``)."""
    num_tasks = params["heads"]["w"].shape[0]
    model = _TorchModel(params, x, y)
    rep = model.features()
    rep_tasks = {t: rep.detach().clone().requires_grad_(True) for t in range(num_tasks)}
    losses = [model.loss(t, rep_tasks[t]) for t in range(num_tasks)]
    mgda = _libmtl("MGDA", model, num_tasks, rep_grad=True, rep=rep, rep_tasks=rep_tasks)
    alpha = mgda.backward(losses, mgda_gn=normalization)
    return alpha, model.grads()


def _max_abs_diff(a, b):
    return max(
        np.max(np.abs(np.asarray(u) - v)) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


# A seed whose two tasks conflict in feature space with an interior MGDA solution.
PARITY_SEED = 2
# Filled by the parity tests (max abs difference of the final parameter gradients).
PARITY = {}


@pytest.mark.parametrize("normalization", ["none", "l2", "loss", "loss+"])
def test_mgda_matches_libmtl_rep_grad(float64_torch, normalization):
    """T = 2 (LibMTL's closed form; ours exact=True) and batch 1: LibMTL sums dL_t/dZ over the
    batch before its Gramian, which for one example is Sener & Koltun's G_Z.

    LibMTL applies the normalized problem's solution ``alpha`` to the UNnormalized feature
    gradients in rep_grad mode (its parameter mode applies it to the normalized ones), whereas
    mtlx.mgda's weights are ``alpha / n_t`` in both modes: under a normalization the test checks
    LibMTL's ``alpha`` and LibMTL's gradients as ``combine(alpha)``, and ours as
    ``combine(alpha / n)``."""
    params, x, y = _model(seed=PARITY_SEED, num_tasks=2, batch=1)
    alpha_libmtl, grads_libmtl = _libmtl_rep_grad_mgda(params, x, y, normalization)
    assert 0.01 < alpha_libmtl[0] < 0.99  # an interior solution: LibMTL clips to 0.001 / 0.999
    losses, jac = FEATURE_ENGINE(params, x, y)
    tx = mtlx.mgda(normalization=normalization, exact=True)
    updates, _ = jax.jit(lambda j: tx.update(j, tx.init(params), params, task_losses=losses))(jac)
    gramian = jac.gramian()
    weights = mtlx.mgda_weights(gramian, losses, normalization=normalization, exact=True)
    norms = jnp.ones(2)
    if normalization in ("l2", "loss+"):
        norms = norms * jnp.sqrt(jnp.diagonal(gramian))
    if normalization in ("loss", "loss+"):
        norms = norms * losses
    alpha = weights * norms
    np.testing.assert_allclose(alpha, alpha_libmtl, rtol=1e-9, atol=1e-12)
    if normalization == "none":
        diff = _max_abs_diff(updates, grads_libmtl)
    else:
        diff = _max_abs_diff(jac.combine(alpha), grads_libmtl)
        _assert_trees_close(updates, jac.combine(alpha / norms))
    PARITY[f"mgda/{normalization}"] = diff
    assert diff < 1e-10


def test_mgda_libmtl_sums_feature_gradients_over_the_batch(float64_torch):
    """With a batch, LibMTL's rep_grad Gramian is that of ``sum_b dL_t/dZ_b``, not Sener &
    Koltun's (and ours, over the batch and feature axes): its weights come from that Gramian,
    applied through the same single encoder VJP."""
    params, x, y = _model(seed=PARITY_SEED, num_tasks=2, batch=B)
    alpha_libmtl, grads_libmtl = _libmtl_rep_grad_mgda(params, x, y, "none")
    _, jac = FEATURE_ENGINE(params, x, y)
    summed = np.asarray(jac.feature_gradients()).sum(axis=1)
    alpha = mtlx.mgda_weights(jnp.asarray(summed @ summed.T), exact=True)
    np.testing.assert_allclose(alpha, alpha_libmtl, rtol=1e-9, atol=1e-12)
    assert _max_abs_diff(jac.combine(alpha), grads_libmtl) < 1e-10
    assert not np.allclose(mtlx.mgda_weights(jac.gramian(), exact=True), alpha, atol=1e-3)


@pytest.mark.parametrize("name", ["PCGrad", "CAGrad", "GradVac"])
def test_libmtl_refuses_rep_grad_for(float64_torch, name):
    obj = _libmtl(name, None, 3, rep_grad=True)
    losses = [torch.tensor(1.0)] * 3
    with pytest.raises(ValueError, match="rep_grad"):
        obj.backward(losses, calpha=0.5, rescale=1, beta=0.5)


def _libmtl_on_the_representation(name, params, x, y, **kwargs):
    """LibMTL's ``name`` in its parameter mode with the representation Z as the one shared
    "parameter", then Z pulled back through the encoder: what rep_grad=True would compute (over
    the whole Z, batch included) for the methods whose rep_grad mode LibMTL refuses."""
    num_tasks = params["heads"]["w"].shape[0]
    model = _TorchModel(params, x, y)
    rep = model.features()
    leaf = rep.detach().clone().requires_grad_(True)
    losses = [model.loss(t, leaf) for t in range(num_tasks)]
    obj = _libmtl(name, model, num_tasks, rep_grad=False)
    obj.get_share_params = lambda: [leaf]
    obj.zero_grad_share_params = lambda: leaf.grad.zero_()
    obj.backward(losses, **kwargs)
    rep.backward(leaf.grad)
    return model.grads()


def test_pcgrad_matches_libmtl_on_the_representation(float64_torch):
    """T = 2: PCGrad's random task order then does not change the update (LibMTL's or ours)."""
    params, x, y = _model(seed=PARITY_SEED, num_tasks=2)
    _, jac = FEATURE_ENGINE(params, x, y)
    gramian = np.asarray(jac.gramian())
    assert gramian[0, 1] < 0  # the tasks conflict in feature space: PCGrad projects
    grads_libmtl = _libmtl_on_the_representation("PCGrad", params, x, y)
    tx = mtlx.pcgrad()
    updates, _ = jax.jit(lambda j: tx.update(j, tx.init(params), params))(jac)
    diff = _max_abs_diff(updates, grads_libmtl)
    PARITY["pcgrad"] = diff
    assert diff < 1e-10


@pytest.mark.parametrize("rescale", [0, 1, 2])
def test_cagrad_matches_libmtl_on_the_representation(float64_torch, rescale):
    """T = 3 (LibMTL hard-codes it); LibMTL's SLSQP dual solve is inexact, so the tolerance is
    tests/weighting/test_cagrad.py's (cosine 0.999, norms within 1%)."""
    params, x, y = _model(seed=PARITY_SEED, num_tasks=3)
    _, jac = FEATURE_ENGINE(params, x, y)
    grads_libmtl = _libmtl_on_the_representation(
        "CAGrad", params, x, y, calpha=0.5, rescale=rescale
    )
    tx = mtlx.cagrad(c=0.5, rescale=rescale)
    updates, _ = jax.jit(lambda j: tx.update(j, tx.init(params), params))(jac)
    PARITY[f"cagrad/rescale={rescale}"] = _max_abs_diff(updates, grads_libmtl)
    from tests import references

    references.assert_parity(updates["encoder"]["w1"], grads_libmtl["encoder"]["w1"])
    references.assert_parity(updates["encoder"]["w2"], grads_libmtl["encoder"]["w2"])
    _assert_trees_close(updates["heads"], grads_libmtl["heads"])


def test_the_conflict_monitor_hands_a_feature_jacobian_on_as_it_came():
    """The monitor measures the parameter rows, and the method after it still reads the features'
    Gramian: the update equals feature-mode MGDA without the monitor."""
    params, x, y = _model()
    losses, jac = FEATURE_ENGINE(params, x, y)
    plain = mtlx.mgda()
    monitored = optax.chain(mtlx.conflict_monitor(num_tasks=T), mtlx.mgda())
    expected, _ = jax.jit(plain.update)(jac, plain.init(params), params, task_losses=losses)
    update, state = jax.jit(monitored.update)(
        jac, monitored.init(params), params, task_losses=losses
    )
    _assert_trees_close(update, expected)
    assert mtlx.layer_conflict_counts(state)  # the monitor observed the parameter rows
    # With the parameter engine the monitor hands its rows on, as before.
    _, param_jac = PARAMS_ENGINE(params, x, y)
    assert param_jac.rows_stand_in and not jac.rows_stand_in
    scale = mtlx.random_row_weights("dirichlet", seed=0)
    assert not scale.update(jac, scale.init(params), params)[0].rows_stand_in
