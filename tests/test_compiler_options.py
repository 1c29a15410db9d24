"""mtlx.jit_compiler_options: the CPU Gramian off YNNPACK's dot fusions, same results, trainer uses it.

The suite itself runs with YNNPACK fusions off (tests/conftest.py sets XLA_FLAGS), where nothing
would tell the option's effect apart: the checks of what it changes run in a Python process with
XLA's default flags.
"""

import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

import mtlx
from mtlx._src import compiler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KNOWN = dict(compiler._supported_cpu_options())

# Run with XLA's default flags: compiles the Gramian and the trainer's step with and without the
# options, reports which programs hold a YNNPACK fusion and how far the two Gramians differ.
_PROBE = r"""
import json, re
import jax, jax.numpy as jnp, numpy as np, optax
import mtlx
from mtlx.training import make_train_step
from tests.training.test_step import TASKS, _batch, _heterogeneous_model

def ynn(compiled):
    return re.search(r"ynn[_-]fusion", compiled.as_text()) is not None

def gramian(j):
    return mtlx.StackedJacobian({"w": j}).gramian()

j = jnp.asarray(np.random.default_rng(0).standard_normal((5, 4096)), jnp.float32)
default = jax.jit(gramian).lower(j).compile()
tuned = jax.jit(gramian, compiler_options=mtlx.jit_compiler_options("cpu")).lower(j).compile()
exact = np.asarray(j, np.float64) @ np.asarray(j, np.float64).T
tx = optax.chain(mtlx.mgda(), optax.adam(1e-2))
batches = jax.tree.map(lambda x: np.stack([x] * 2), _batch())

def trainer_ynn(**options):
    fns = make_train_step(_heterogeneous_model(), TASKS, tx, steps_per_call=2, **options)
    return ynn(fns.step.lower(fns.init(), batches).compile())

print(json.dumps({
    "default_ynn": ynn(default),
    "tuned_ynn": ynn(tuned),
    "trainer_ynn": trainer_ynn(),
    "trainer_without_options_ynn": trainer_ynn(compiler_options={}),
    "tuned_vs_default": float(np.abs(np.asarray(tuned(j)) - np.asarray(default(j))).max()),
    "tuned_vs_exact": float(np.abs(np.asarray(tuned(j)) - exact).max()),
    "scale": float(np.abs(exact).max()),
}))
"""


@pytest.mark.parametrize("backend", ["gpu", "tpu", "cuda", "rocm"])
def test_no_options_off_cpu(backend):
    assert mtlx.jit_compiler_options(backend) == {}


def test_cpu_options_are_the_ones_this_jaxlib_accepts():
    options = mtlx.jit_compiler_options("cpu")
    assert set(options) <= set(compiler._CPU_OPTIONS)
    assert options == KNOWN
    jax.jit(lambda x: x * 2, compiler_options=options)(jnp.ones(3))  # compiles


@pytest.mark.skipif(not KNOWN, reason="this jaxlib knows none of the CPU options")
def test_the_gramian_and_the_trainer_leave_ynnpack_and_keep_the_value():
    # Drop the suite's own setting of each option (XLA_FLAGS spells them --<option>=<value>).
    flags = os.environ.get("XLA_FLAGS", "")
    for option in compiler._CPU_OPTIONS:
        flags = re.sub(rf"--{re.escape(option)}=\S*", "", flags)
    env = {
        **os.environ,
        "XLA_FLAGS": flags.strip(),
        "JAX_PLATFORMS": "cpu",
        "JAX_DISABLE_MOST_OPTIMIZATIONS": "0",  # what users compile
    }
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-4000:]
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    if not probe["default_ynn"]:
        pytest.skip("XLA:CPU did not fuse the Gramian's dot into YNNPACK here: nothing to compare")
    assert not probe["tuned_ynn"], probe
    # The trainer's own step: fused without the options, not with them (its default).
    assert probe["trainer_without_options_ynn"] and not probe["trainer_ynn"], probe
    atol = 1e-6 * probe["scale"]  # float32 sums in another order: rounding, not more
    assert probe["tuned_vs_default"] <= atol and probe["tuned_vs_exact"] <= atol, probe
