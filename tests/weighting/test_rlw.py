"""mtlx.rlw: the weight distributions (statistics on fixed keys), reproducibility, one backward."""

import functools

import chex
import jax
import jax.extend.core as jax_core
import jax.numpy as jnp
import numpy as np
import pytest

import mtlx

T = 3
NUM_DRAWS = 20_000
DISTRIBUTIONS = (
    "normal",
    "uniform",
    "dirichlet",
    "random_normal",
    "bernoulli",
    "constrained_bernoulli",
)


@functools.cache
def _sampler(distribution, num_tasks):
    """One compile per distribution and T: the hyperparameters are (T,) arguments."""

    def sample(keys, concentration, loc, scale):
        draw = functools.partial(mtlx.rlw_weights, num_tasks=num_tasks, distribution=distribution)
        return jax.vmap(lambda k: draw(k, concentration=concentration, loc=loc, scale=scale))(keys)

    return jax.jit(sample)


def _draws(distribution, num_tasks=T, concentration=1.0, loc=0.0, scale=1.0):
    """NUM_DRAWS weight vectors from one fixed key: (NUM_DRAWS, T)."""
    keys = jax.random.split(jax.random.key(1234), NUM_DRAWS)
    args = _vectors(num_tasks, concentration, loc, scale)
    return np.asarray(_sampler(distribution, num_tasks)(keys, *args))


def _vectors(num_tasks, *values):
    return [jnp.broadcast_to(jnp.asarray(v, float), (num_tasks,)) for v in values]


@functools.cache
def _transform(distribution):
    """One transform (one jit cache) per distribution; keys vary through the state."""
    tx = mtlx.rlw(distribution)
    return tx, jax.jit(tx.update)


@pytest.mark.parametrize("distribution", ["normal", "uniform", "dirichlet", "random_normal"])
def test_simplex_distributions_are_positive_and_sum_to_one(distribution):
    w = _draws(distribution, loc=(0.2, 0.5, 0.9), scale=(0.3, 0.1, 0.7))
    assert np.all(w >= 0)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-12)


@pytest.mark.parametrize(
    "distribution", ["normal", "uniform", "dirichlet", "constrained_bernoulli"]
)
def test_exchangeable_distributions_have_mean_one_over_t(distribution):
    np.testing.assert_allclose(_draws(distribution).mean(axis=0), 1.0 / T, atol=0.01)


def test_normal_is_softmax_of_a_standard_normal():
    w = _draws("normal")
    log_ratio = np.log(w[:, 0] / w[:, 1])  # = z_0 - z_1 ~ N(0, 2)
    assert abs(log_ratio.mean()) < 0.05
    assert abs(log_ratio.var() - 2.0) < 0.1


def test_normal_with_loc_and_scale_has_the_stated_logit_moments():
    """random_normal: softmax(loc + scale * z); log(w_i / w_j) ~ N(loc_i - loc_j, s_i^2 + s_j^2)."""
    loc, scale = (0.2, 0.5, 0.9), (0.3, 0.1, 0.7)
    w = _draws("random_normal", loc=loc, scale=scale)
    log_ratio = np.log(w[:, 2] / w[:, 0])
    assert abs(log_ratio.mean() - (0.9 - 0.2)) < 0.02
    assert abs(log_ratio.var() - (0.7**2 + 0.3**2)) < 0.02


def test_uniform_is_softmax_of_a_unit_uniform():
    w = _draws("uniform")
    log_ratio = np.log(w[:, 0] / w[:, 1])  # = u_0 - u_1: triangular on [-1, 1], variance 1/6
    assert np.all(np.abs(log_ratio) <= 1.0 + 1e-12)
    assert abs(log_ratio.var() - 1.0 / 6.0) < 0.01


@pytest.mark.parametrize("concentration", [1.0, (1.0, 2.0, 3.0), (0.3, 0.3, 0.3)])
def test_dirichlet_moments(concentration):
    alpha = np.broadcast_to(np.asarray(concentration, float), (T,))
    a0 = alpha.sum()
    w = _draws("dirichlet", concentration=concentration)
    np.testing.assert_allclose(w.mean(axis=0), alpha / a0, atol=0.01)
    np.testing.assert_allclose(w.var(axis=0), alpha * (a0 - alpha) / (a0**2 * (a0 + 1)), rtol=0.08)


def test_bernoulli_is_uniform_over_the_non_zero_patterns():
    """Bernoulli(1/2) conditioned on not all zero: each of the 2^T - 1 patterns has mass 1/7."""
    w = _draws("bernoulli")
    assert set(np.unique(w)) <= {0.0, 1.0}
    assert np.all(w.sum(axis=1) >= 1)
    codes = (w @ (2 ** np.arange(T))).astype(int)
    frequencies = np.bincount(codes, minlength=2**T) / NUM_DRAWS
    assert frequencies[0] == 0
    np.testing.assert_allclose(frequencies[1:], 1.0 / (2**T - 1), atol=0.01)
    # marginals: P(w_t = 1 | not all zero) = 2^(T-1) / (2^T - 1)
    np.testing.assert_allclose(w.mean(axis=0), 2 ** (T - 1) / (2**T - 1), atol=0.01)


def test_bernoulli_never_all_zero_for_many_tasks_and_one_task():
    assert np.all(_draws("bernoulli", num_tasks=40).sum(axis=1) >= 1)
    np.testing.assert_array_equal(_draws("bernoulli", num_tasks=1), 1.0)


def test_constrained_bernoulli_is_one_hot():
    w = _draws("constrained_bernoulli")
    np.testing.assert_array_equal(w.sum(axis=1), 1.0)
    assert set(np.unique(w)) == {0.0, 1.0}


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_update_is_the_draw_from_the_state_key_split_once_per_step(distribution):
    """On J = I the update is the weights; step k uses split(key_k)[1] and keeps split(key_k)[0]."""
    tx, update = _transform(distribution)
    state = tx.init(None)
    key, outs, draw_keys = state.key, [], []
    for _ in range(3):
        out, state = update(jnp.eye(T), state)
        key, draw_key = jax.random.split(key)
        outs.append(out)
        draw_keys.append(draw_key)
        np.testing.assert_array_equal(jax.random.key_data(state.key), jax.random.key_data(key))
    loc, scale = (0.0, 1.0)
    if distribution == "random_normal":
        loc, scale = mtlx.random_normal_parameters(0, T)
    # pad to NUM_DRAWS keys: reuses the sampler compiled for the statistical tests
    keys = jax.random.split(jax.random.key(1234), NUM_DRAWS).at[:3].set(jnp.stack(draw_keys))
    expected = _sampler(distribution, T)(keys, *_vectors(T, 1.0, loc, scale))[:3]
    np.testing.assert_allclose(np.stack(outs), expected, rtol=1e-12)


def test_same_seed_same_weights_different_seed_different_weights():
    j = jnp.asarray(np.random.default_rng(0).standard_normal((T, 5)))
    tx, update = _transform("normal")

    def run(seed):
        state, outs = tx.init(None)._replace(key=jax.random.key(seed)), []
        for _ in range(3):
            out, state = update(j, state)
            outs.append(np.asarray(out))
        return np.stack(outs)

    np.testing.assert_array_equal(run(7), run(7))
    assert not np.allclose(run(7), run(8))
    outs = run(7)
    assert not np.allclose(outs[0], outs[1])  # the key moves on between steps
    # a factory given the same seed gives the same draws
    other = mtlx.rlw(seed=7)
    np.testing.assert_allclose(other.update(j, other.init(None))[0], outs[0], rtol=1e-12)


def test_random_normal_parameters_are_fixed_for_the_run_and_in_the_unit_interval():
    loc, scale = mtlx.random_normal_parameters(3, 5)
    chex.assert_shape((loc, scale), (5,))
    assert np.all((0 <= loc) & (loc < 1)) and np.all((0 <= scale) & (scale < 1))
    np.testing.assert_array_equal(loc, mtlx.random_normal_parameters(3, 5)[0])
    assert not np.allclose(loc, mtlx.random_normal_parameters(4, 5)[0])


def test_heads_are_weighted_like_the_shared_leaves():
    """RLW backpropagates sum_t w_t L_t: a task-specific head gets w_t grad L_t."""
    params, x, y = _model()
    engine = mtlx.value_and_jacobian(_loss_fn, shared=is_shared)
    losses, jac = engine(params, x, y)
    tx = mtlx.rlw(seed=3)
    out, _ = tx.update(jac, tx.init(params), params)  # eager: a small model compiles slower
    weights = mtlx.rlw_weights(jax.random.split(jax.random.key(3))[1], T)
    expected = jax.grad(lambda p: weights @ _loss_fn(p, x, y))(params)
    chex.assert_trees_all_close(out, expected, rtol=1e-10, atol=1e-12)


def test_works_under_vmap_over_states():
    tx, _ = _transform("uniform")
    keys = jax.random.split(jax.random.key(0), 4)
    states = jax.vmap(lambda k: tx.init(None)._replace(key=k))(keys)
    outs, _ = jax.jit(jax.vmap(tx.update, in_axes=(None, 0)))(jnp.eye(T), states)
    chex.assert_shape(outs, (4, T))
    np.testing.assert_allclose(outs.sum(axis=1), 1.0, rtol=1e-12)
    assert len({tuple(np.round(o, 8)) for o in np.asarray(outs)}) == 4


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(distribution="gumbel"), "unknown RLW distribution"),
        (dict(distribution="dirichlet", concentration=0.0), "concentration"),
        (dict(distribution="dirichlet", concentration=-1.0), "concentration"),
        (dict(num_tasks=0), "num_tasks"),
    ],
)
def test_bad_hyperparameters_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mtlx.rlw(**kwargs)


def test_wrong_num_tasks_or_concentration_length_raise():
    tx = mtlx.rlw(num_tasks=4)
    with pytest.raises(ValueError, match="num_tasks=4"):
        tx.update(jnp.eye(T), tx.init(None))
    tx = mtlx.rlw("dirichlet", concentration=jnp.ones(4))
    with pytest.raises(ValueError, match="concentration has 4 entries"):
        tx.update(jnp.eye(T), tx.init(None))


# A model as in tests/test_jacobian.py: encoder (4 -> 6) and T linear heads, batch of 8.
def _model():
    rng = np.random.default_rng(0)

    def normal(*shape):
        return jnp.asarray(rng.standard_normal(shape))

    params = {
        "encoder": {"w": normal(4, 6), "b": normal(6)},
        "heads": {"w": normal(T, 6), "b": normal(T)},
    }
    return params, normal(8, 4), normal(8, T)


def is_shared(path, leaf):
    del leaf
    return "heads" not in jax.tree_util.keystr(path)


def _loss_fn(p, x, y):
    h = jnp.tanh(x @ p["encoder"]["w"] + p["encoder"]["b"])
    return jnp.mean((h @ p["heads"]["w"].T + p["heads"]["b"] - y) ** 2, axis=0)


def step_jaxpr(tx):
    """The jaxpr of one engine step with ``tx``, and the output shapes of its equations."""
    params, x, y = _model()

    def step(params, state):
        losses, jac = mtlx.value_and_jacobian(_loss_fn)(params, x, y)
        return tx.update(jac, state, params, task_losses=losses)

    jaxpr = jax.make_jaxpr(step)(params, tx.init(params))
    shapes = [tuple(v.aval.shape) for eqn in jaxpr.eqns for v in eqn.outvars]
    return jaxpr, shapes


def count_matmuls(closed_jaxpr):
    """``dot_general`` equations, nested jaxprs (pjit, custom_jvp, ...) included."""

    def count(jaxpr):
        return sum(
            (eqn.primitive.name == "dot_general")
            + sum(count(sub) for sub in jax_core.jaxprs_in_params(eqn.params))
            for eqn in jaxpr.eqns
        )

    return count(closed_jaxpr.jaxpr)


def test_one_backward_pass_with_the_engine():
    """No (T, batch, hidden) intermediate (T batched backward passes), and EW's matmul count."""
    jaxpr, shapes = step_jaxpr(mtlx.rlw())
    _, rows_shapes = step_jaxpr(mtlx.upgrad())  # a Gramian method: its rows are T backward passes
    assert (T, 8, 6) in rows_shapes
    assert (T, 8, 6) not in shapes
    ew_jaxpr, _ = step_jaxpr(mtlx.ew())
    assert count_matmuls(jaxpr) == count_matmuls(ew_jaxpr)
