"""mtlx.analysis.single_task: inter-sample and inter-task statistics vs per-example gradients."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtlx import analysis

K, T = 4, 3


def _setup(seed=0):
    rng = np.random.default_rng(seed)
    params = {
        "trunk": {"kernel": jnp.asarray(0.5 * rng.standard_normal((5, 6)))},
        "heads": jnp.asarray(0.5 * rng.standard_normal((T, 6))),
    }
    batch = {
        "x": jnp.asarray(rng.standard_normal((K, 5))),
        "y": jnp.asarray(rng.standard_normal((K, T))),
    }
    return params, batch


def per_example_losses(params, batch):
    h = jnp.tanh(batch["x"] @ params["trunk"]["kernel"])
    return (h @ params["heads"].T - batch["y"]) ** 2  # (K, T)


def _cos(a, b):
    return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))


def test_inter_task_and_inter_sample_pairs_equal_per_example_gradients():
    params, batch = _setup()

    def not_heads(path, leaf):
        return "heads" not in jax.tree_util.keystr(path)

    stats = jax.jit(
        lambda p, b: analysis.sample_conflicts(per_example_losses, p, b, shared=not_heads)
    )(params, batch)

    # g[i, t]: gradient of example i's task-t loss w.r.t. the shared trunk, one example at a time.
    def one_example(p, example):
        return per_example_losses(p, jax.tree.map(lambda x: x[None], example))[0]

    jac = jax.jit(jax.vmap(jax.jacrev(one_example), in_axes=(None, 0)))(params, batch)
    g = np.asarray(jac["trunk"]["kernel"]).reshape(K, T, -1)
    pairs_t = [(s, t) for s in range(T) for t in range(s + 1, T)]
    pairs_k = [(i, j) for i in range(K) for j in range(i + 1, K)]
    inter_task = [_cos(g[i, s], g[i, t]) for i in range(K) for s, t in pairs_t]
    inter_sample = [_cos(g[i, t], g[j, t]) for t in range(T) for i, j in pairs_k]
    np.testing.assert_allclose(stats.inter_task.cosine, inter_task, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(stats.inter_sample.cosine, inter_sample, rtol=1e-6, atol=1e-9)
    signs = [np.mean(g[i, t] * g[j, t] < 0) for t in range(T) for i, j in pairs_k]
    np.testing.assert_allclose(stats.inter_sample.sign_disagreement, signs)
    chex.assert_shape(stats.inter_task.conflicts, (K * T * (T - 1) // 2, 4))


def test_single_task_and_task_subsets():
    params, batch = _setup(1)
    single = jax.jit(
        lambda p, b: analysis.sample_conflicts(lambda p, b: per_example_losses(p, b)[:, 0], p, b)
    )(params, batch)
    chex.assert_shape(single.inter_task.cosine, (0,))
    chex.assert_shape(single.inter_sample.cosine, (K * (K - 1) // 2,))
    subset = jax.jit(
        lambda p, b: analysis.sample_conflicts(per_example_losses, p, b, task_indices=[0])
    )(params, batch)
    np.testing.assert_allclose(subset.inter_sample.cosine, single.inter_sample.cosine, rtol=1e-10)
    with pytest.raises(ValueError, match=r"\(k, T\)"):
        analysis.sample_conflicts(
            lambda p, b: jnp.zeros((K, T, 2)) + p["heads"].sum(), params, batch
        )


def test_subsample_and_summarize():
    batch = {"x": jnp.arange(10.0), "y": jnp.arange(10)}
    sub = jax.jit(analysis.subsample, static_argnums=2)(batch, jax.random.key(0), 4)
    assert len(set(np.asarray(sub["y"]).tolist())) == 4
    np.testing.assert_array_equal(sub["x"], sub["y"])
    with pytest.raises(ValueError, match="num_samples"):
        analysis.subsample(batch, jax.random.key(0), 11)
    values = np.random.default_rng(0).uniform(-1, 1, 500)
    s = analysis.summarize(np.append(values, np.nan))
    np.testing.assert_allclose(s.mean, values.mean(), rtol=1e-5)
    np.testing.assert_allclose(s.std, values.std(), rtol=1e-5)
    np.testing.assert_allclose([s.p2_5, s.p97_5], np.percentile(values, [2.5, 97.5]), rtol=1e-5)
    assert int(s.count) == 500
