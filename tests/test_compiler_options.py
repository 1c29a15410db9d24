"""mtlx.jit_compiler_options: the CPU Gramian off YNNPACK's dot fusions, same results, trainer uses it."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import mtlx
from mtlx._src import compiler
from mtlx.training import make_train_step
from tests.training.test_step import TASKS, _batch, _heterogeneous_model

KNOWN = dict(compiler._supported_cpu_options())


def _has_ynn_fusion(compiled) -> bool:
    return re.search(r"ynn[_-]fusion", compiled.as_text()) is not None


def _gramian(j):
    return mtlx.StackedJacobian({"w": j}).gramian()


@pytest.mark.parametrize("backend", ["gpu", "tpu", "cuda", "rocm"])
def test_no_options_off_cpu(backend):
    assert mtlx.jit_compiler_options(backend) == {}


def test_cpu_options_are_the_ones_this_jaxlib_accepts():
    options = mtlx.jit_compiler_options("cpu")
    assert set(options) <= set(compiler._CPU_OPTIONS)
    assert options == KNOWN
    jax.jit(lambda x: x * 2, compiler_options=options)(jnp.ones(3))  # compiles


@pytest.mark.skipif(not KNOWN, reason="this jaxlib knows none of the CPU options")
def test_the_gramian_leaves_ynnpack_and_keeps_its_value():
    j = jnp.asarray(np.random.default_rng(0).standard_normal((5, 4096)), jnp.float32)
    default = jax.jit(_gramian).lower(j).compile()
    tuned = jax.jit(_gramian, compiler_options=mtlx.jit_compiler_options("cpu")).lower(j).compile()
    assert not _has_ynn_fusion(tuned)
    if not _has_ynn_fusion(default):
        pytest.skip("XLA:CPU did not fuse this dot into YNNPACK here: nothing to compare")
    exact = np.asarray(j, np.float64) @ np.asarray(j, np.float64).T
    atol = 1e-6 * np.abs(exact).max()  # float32 sums in another order: rounding, not more
    np.testing.assert_allclose(tuned(j), default(j), rtol=0, atol=atol)
    np.testing.assert_allclose(tuned(j), exact, rtol=0, atol=atol)


@pytest.mark.skipif(not KNOWN, reason="this jaxlib knows none of the CPU options")
def test_the_trainer_compiles_its_step_with_them():
    tx = optax.chain(mtlx.mgda(), optax.adam(1e-2))
    fns = make_train_step(_heterogeneous_model(), TASKS, tx, steps_per_call=2)
    batches = jax.tree.map(lambda x: np.stack([x] * 2), _batch())
    assert not _has_ynn_fusion(fns.step.lower(fns.init(), batches).compile())
