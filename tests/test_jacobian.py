"""mtlx.value_and_jacobian: rows equal per-task jax.grad; the lazy paths equal the materialised one."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtlx

T = 3


def _model():
    rng = np.random.default_rng(0)
    params = {
        "encoder": {
            "w": jnp.asarray(rng.standard_normal((4, 6))),
            "b": jnp.asarray(rng.standard_normal(6)),
        },
        "heads": {
            "w": jnp.asarray(rng.standard_normal((T, 6))),
            "b": jnp.asarray(rng.standard_normal(T)),
        },
    }
    x = jnp.asarray(rng.standard_normal((8, 4)))
    y = jnp.asarray(rng.standard_normal((8, T)))
    return params, x, y


def _encoder(p, x, *unused_targets):
    return jnp.tanh(x @ p["w"] + p["b"])


def _heads(h, features, x, y):
    preds = features @ h["w"].T + h["b"]
    return jnp.mean((preds - y) ** 2, axis=0)


def _loss_fn(p, x, y):
    return _heads(p["heads"], _encoder(p["encoder"], x), x, y)


def _is_shared(path, leaf):
    return "heads" not in jax.tree_util.keystr(path)


def _per_task_grads(params, x, y):
    return [jax.grad(lambda p, t=t: _loss_fn(p, x, y)[t])(params) for t in range(T)]


@pytest.mark.parametrize("chunk_size", [None, 1, 2, 3])
def test_rows_equal_per_task_grad(chunk_size):
    params, x, y = _model()
    losses, jac = mtlx.value_and_jacobian(_loss_fn, shared=_is_shared, chunk_size=chunk_size)(
        params, x, y
    )
    chex.assert_trees_all_close(losses, _loss_fn(params, x, y))
    rows = jac.rows()
    for t, grad_t in enumerate(_per_task_grads(params, x, y)):
        chex.assert_trees_all_close(
            jax.tree.map(lambda r: r[t], rows), grad_t, rtol=1e-12, atol=1e-12
        )


def test_rows_through_features_equal_per_task_grad():
    params, x, y = _model()
    losses, jac = jax.jit(mtlx.value_and_jacobian_through_features(_encoder, _heads))(params, x, y)
    chex.assert_trees_all_close(losses, _loss_fn(params, x, y))
    rows = jac.rows()
    for t, grad_t in enumerate(_per_task_grads(params, x, y)):
        chex.assert_trees_all_close(
            jax.tree.map(lambda r: r[t], rows), grad_t, rtol=1e-12, atol=1e-12
        )
    assert jac.shared_mask == (True, True, False, False)


@pytest.mark.parametrize("chunk_size", [None, 1, 2])
@pytest.mark.parametrize("path", ["plain", "features"])
def test_gramian_is_over_shared_leaves_only(chunk_size, path):
    params, x, y = _model()
    if path == "plain":
        engine = mtlx.value_and_jacobian(_loss_fn, shared=_is_shared, chunk_size=chunk_size)
    else:
        engine = mtlx.value_and_jacobian_through_features(_encoder, _heads, chunk_size=chunk_size)
    _, jac = jax.jit(engine)(params, x, y)
    gramian = jax.jit(lambda j: j.gramian())(jac)
    grads = _per_task_grads(params, x, y)
    enc = np.stack(
        [np.concatenate([np.ravel(v) for v in jax.tree.leaves(g["encoder"])]) for g in grads]
    )
    np.testing.assert_allclose(gramian, enc @ enc.T, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("task_specific", ["own", "weighted"])
@pytest.mark.parametrize("chunk_size", [None, 2])
def test_combine_is_one_weighted_backward(task_specific, chunk_size):
    params, x, y = _model()
    _, jac = mtlx.value_and_jacobian(_loss_fn, shared=_is_shared, chunk_size=chunk_size)(
        params, x, y
    )
    w = jnp.array([0.2, -1.0, 3.0])
    out = jax.jit(lambda j: j.combine(w, task_specific))(jac)
    grads = _per_task_grads(params, x, y)
    expected_shared = sum(w[t] * grads[t]["encoder"]["w"] for t in range(T))
    head_w = w if task_specific == "weighted" else jnp.ones(T)
    expected_heads = sum(head_w[t] * grads[t]["heads"]["w"] for t in range(T))
    np.testing.assert_allclose(out["encoder"]["w"], expected_shared, rtol=1e-10)
    np.testing.assert_allclose(out["heads"]["w"], expected_heads, rtol=1e-10)
    # the materialised path agrees
    chex.assert_trees_all_close(
        out,
        mtlx.as_jacobian(jac.rows())
        .__class__(jac.rows(), jac.shared_mask)
        .combine(w, task_specific),
        rtol=1e-10,
    )


def test_combine_alone_traces_no_rows():
    """A loss-only method's step has one backward pass: no T-batched VJP in the jaxpr."""
    params, x, y = _model()

    def step(params):
        _, jac = mtlx.value_and_jacobian(_loss_fn)(params, x, y)
        return jac.combine(jnp.ones(T), "weighted")

    def rows_step(params):
        _, jac = mtlx.value_and_jacobian(_loss_fn)(params, x, y)
        return jac.rows()

    def shapes(fn):
        jaxpr = jax.make_jaxpr(fn)(params)
        return [tuple(v.aval.shape) for eqn in jaxpr.eqns for v in eqn.outvars]

    # the rows path builds (T, 8, 6)-shaped intermediates (T batched backward passes); combine does not
    assert (T, 8, 6) in shapes(rows_step)
    assert (T, 8, 6) not in shapes(step)


def test_task_specific_leaves_without_a_task_axis():
    """A head used by one task as a whole (no T axis) gets that task's gradient, not the aggregate."""
    params, x, y = _model()

    def loss_fn(p, x, y):  # head t is its own leaf: heads of different shapes are common (dense)
        features = _encoder(p["encoder"], x)
        return jnp.stack([jnp.mean((features @ p["heads"][t] - y[:, t]) ** 2) for t in range(T)])

    params = {**params, "heads": [params["heads"]["w"][t] for t in range(T)]}
    _, jac = mtlx.value_and_jacobian(loss_fn, shared=_is_shared)(params, x, y)
    w = jnp.array([0.2, -1.0, 3.0])
    grads = [jax.grad(lambda p, t=t: loss_fn(p, x, y)[t])(params) for t in range(T)]
    own, weighted = jac.combine(w, "own"), jac.combine(w, "weighted")
    for t in range(T):
        np.testing.assert_allclose(own["heads"][t], grads[t]["heads"][t], rtol=1e-10)
        np.testing.assert_allclose(weighted["heads"][t], w[t] * grads[t]["heads"][t], rtol=1e-10)
    expected = sum(w[t] * grads[t]["encoder"]["w"] for t in range(T))
    np.testing.assert_allclose(own["encoder"]["w"], expected, rtol=1e-10)


def test_has_aux():
    params, x, y = _model()

    def loss_with_aux(p, x, y):
        losses = _loss_fn(p, x, y)
        return losses, {"total": losses.sum()}

    (losses, aux), jac = mtlx.value_and_jacobian(loss_with_aux, has_aux=True)(params, x, y)
    np.testing.assert_allclose(aux["total"], losses.sum())
    assert jac.num_tasks == T


def test_jacobian_passes_through_jit_and_scan():
    params, x, y = _model()
    engine = mtlx.value_and_jacobian(_loss_fn)

    @jax.jit
    def make(params):
        return engine(params, x, y)

    _, jac = make(params)

    def body(carry, w):
        return carry, jac.combine(w)

    _, outs = jax.lax.scan(body, 0, jnp.eye(T))
    chex.assert_trees_all_close(outs, jac.rows(), rtol=1e-10)


def test_errors_name_the_problem():
    params, x, y = _model()
    with pytest.raises(ValueError, match=r"shape \(T,\)"):
        mtlx.value_and_jacobian(lambda p, x, y: _loss_fn(p, x, y)[None])(params, x, y)
    with pytest.raises(ValueError, match="structure of params"):
        mtlx.value_and_jacobian(_loss_fn, shared={"encoder": True})(params, x, y)
    with pytest.raises(ValueError, match="chunk_size"):
        mtlx.value_and_jacobian(_loss_fn, chunk_size=0)
    _, jac = mtlx.value_and_jacobian(_loss_fn)(params, x, y)
    with pytest.raises(ValueError, match="weights"):
        jac.combine(jnp.ones(T + 1))


def test_bfloat16_gramian_accumulates_in_float32():
    j = jnp.ones((2, 4096), jnp.bfloat16) * jnp.asarray(1.001, jnp.bfloat16)
    gramian = mtlx.as_jacobian(j).gramian()
    assert gramian.dtype == jnp.float32


def test_per_task_engine_equals_the_batched_engine_and_each_task_may_have_its_own_input():
    params, x, y = _model()

    def task_loss(p, t, x, y):
        return _loss_fn(p, x, y)[t], t  # aux: which pass

    (losses, auxes), jac = jax.jit(
        mtlx.value_and_jacobian_per_task(task_loss, T, shared=_is_shared, has_aux=True)
    )(params, x, y)
    ref_losses, ref = mtlx.value_and_jacobian(_loss_fn, shared=_is_shared)(params, x, y)
    assert isinstance(jac, mtlx.StackedJacobian) and tuple(map(int, auxes)) == (0, 1, 2)
    chex.assert_trees_all_close(losses, ref_losses, rtol=1e-12)
    chex.assert_trees_all_close(jac.gramian(), ref.gramian(), rtol=1e-10)
    w = jnp.asarray([0.5, -1.0, 2.0])
    chex.assert_trees_all_close(jac.combine(w), ref.combine(w), rtol=1e-10, atol=1e-14)
    # Multi-input: task t reads its own batch; row t is grad L_t on batch t.
    batches = [x[: 3 + t] for t in range(T)]
    targets = [y[: 3 + t] for t in range(T)]
    per_input = lambda p, t: _loss_fn(p, batches[t], targets[t])[t]  # noqa: E731
    _, jac = mtlx.value_and_jacobian_per_task(per_input, T)(params)
    for t in range(T):
        chex.assert_trees_all_close(
            jax.tree.map(lambda r, t=t: r[t], jac.rows()),
            jax.grad(per_input)(params, t),
            rtol=1e-12,
        )


def test_per_task_engine_errors():
    params, x, y = _model()
    with pytest.raises(ValueError, match="num_tasks"):
        mtlx.value_and_jacobian_per_task(lambda p, t: 0.0, 0)
    with pytest.raises(ValueError, match="scalar"):
        mtlx.value_and_jacobian_per_task(lambda p, t: _loss_fn(p, x, y), T)(params)
    with pytest.raises(ValueError, match=r"\(loss, aux\)"):
        mtlx.value_and_jacobian_per_task(lambda p, t: _loss_fn(p, x, y)[t], T, has_aux=True)(params)
