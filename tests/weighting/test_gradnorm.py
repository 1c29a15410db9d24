"""mtlx.gradnorm: GradNorm (Chen et al., ICML 2018), LibMTL's formulation."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtlx

T = 3
RNG = np.random.default_rng(0)
JAC = jnp.asarray(RNG.standard_normal((T, 6)) * np.array([[0.1], [1.0], [10.0]]))


@functools.cache
def _run(learning_rate, warmup_steps=0):
    tx = mtlx.gradnorm(T, 1.5, learning_rate, warmup_steps=warmup_steps)

    @jax.jit
    def run(jacs, losses):
        def step(state, inputs):
            out, state = tx.update(inputs[0], state, None, task_losses=inputs[1])
            return state, out

        return jax.lax.scan(step, tx.init(None), (jacs, losses))

    return run


def test_logits_gradient_is_the_gradient_of_the_gradnorm_loss():
    logits, losses, initial = jnp.array([0.2, -0.1, 0.4]), jnp.array([0.5, 1.0, 2.0]), jnp.ones(3)
    gram = JAC @ JAC.T
    norms = jnp.sqrt(jnp.diagonal(gram))

    def gradnorm_loss(p):
        weighted = T * jax.nn.softmax(p) * norms
        ratios = losses / initial
        target = jax.lax.stop_gradient(jnp.mean(weighted) * (ratios / ratios.mean()) ** 1.5)
        return jnp.sum(jnp.abs(weighted - target))

    np.testing.assert_allclose(
        mtlx.gradnorm_logits_gradient(logits, gram, losses, initial, 1.5),
        jax.grad(gradnorm_loss)(logits),
        rtol=1e-10,
    )


def test_first_update_is_the_plain_sum_and_weights_keep_summing_to_t():
    jacs = jnp.broadcast_to(JAC, (50, T, 6))
    losses = jnp.broadcast_to(jnp.array([1.0, 1.0, 1.0]), (50, T))
    state, outs = _run(0.05)(jacs, losses)
    np.testing.assert_allclose(outs[0], JAC.sum(0), rtol=1e-12)
    weights = mtlx.gradnorm_weights(state.logits)
    np.testing.assert_allclose(weights.sum(), T, rtol=1e-12)
    # equal training rates: the weighted gradient norms are pulled together (the largest row down)
    norms = np.linalg.norm(JAC, axis=1)
    assert np.ptp(weights * norms) < np.ptp(norms)
    assert weights[2] < 1.0 < weights[0]


def test_a_slower_task_gets_more_weight():
    # identical rows, so only the training rates differ: task 0's loss stays, the others fall
    jac = jnp.broadcast_to(JAC[1], (T, 6))
    losses = np.exp(-0.05 * np.arange(30))[:, None] * np.ones((30, T))
    losses[:, 0] = 1.0
    state, _ = _run(0.05)(jnp.broadcast_to(jac, (30, T, 6)), jnp.asarray(losses))
    weights = mtlx.gradnorm_weights(state.logits)
    assert weights[0] > weights[1] and weights[0] > weights[2]


def test_warmup_uses_equal_weights_and_the_mean_warmup_loss_as_l0():
    jacs = jnp.broadcast_to(JAC, (3, T, 6))
    losses = jnp.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [1.0, 1.0, 1.0]])
    state, outs = _run(0.05, 2)(jacs, losses)
    np.testing.assert_allclose(outs[:2], np.broadcast_to(JAC.sum(0), (2, 6)), rtol=1e-12)
    np.testing.assert_allclose(state.initial_loss_sum / 2, [2.0, 2.0, 2.0])
    assert int(jax.tree.leaves(state.logits_opt_state)[0]) == 1  # one Adam step, after warm-up


def test_precomputed_gramian_is_used():
    tx = mtlx.gradnorm(T)
    state, losses = tx.init(None), jnp.array([1.0, 2.0, 3.0])
    other = jnp.diag(jnp.array([10.0, 1.0, 0.1]))  # a Jacobian whose row norms are reversed
    _, s_given = tx.update(JAC, state, None, task_losses=losses, gramian=other @ other.T)
    _, s_other = tx.update(other, state, None, task_losses=losses)
    _, s_own = tx.update(JAC, state, None, task_losses=losses)
    np.testing.assert_allclose(s_given.logits, s_other.logits, rtol=1e-12)
    assert not np.allclose(s_given.logits, s_own.logits)


def test_bad_hyperparameters_raise():
    with pytest.raises(ValueError, match="num_tasks"):
        mtlx.gradnorm(0)
    with pytest.raises(ValueError, match="warmup_steps"):
        mtlx.gradnorm(3, warmup_steps=-1)
    with pytest.raises(ValueError, match="alpha"):
        mtlx.gradnorm(3, alpha=-1.0)


def test_sgd_optimizer_factory():
    tx = mtlx.gradnorm(T, learning_rate=0.1, optimizer=optax.sgd)
    _, state = tx.update(JAC, tx.init(None), None, task_losses=jnp.ones(T))
    gram = JAC @ JAC.T
    expected = -0.1 * mtlx.gradnorm_logits_gradient(jnp.zeros(T), gram, jnp.ones(T), jnp.ones(T))
    np.testing.assert_allclose(state.logits, expected, rtol=1e-10)


def test_inject_hyperparams_with_static_structure():
    tx = optax.inject_hyperparams(
        mtlx.gradnorm, static_args=("num_tasks", "optimizer", "warmup_steps")
    )(num_tasks=T, alpha=1.5, learning_rate=0.01)
    ref = mtlx.gradnorm(T, 1.5, 0.01)
    state, ref_state = tx.init(None), ref.init(None)
    for loss in (jnp.ones(T), jnp.array([0.5, 1.0, 2.0])):
        out, state = jax.jit(tx.update)(JAC, state, None, task_losses=loss)
        expected, ref_state = ref.update(JAC, ref_state, None, task_losses=loss)
    np.testing.assert_allclose(out, expected, rtol=1e-10)
