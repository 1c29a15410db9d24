import importlib.metadata
import os
import tempfile

# XLA:CPU's YNNPACK dot fusions off, as mtlx.jit_compiler_options() does for mtlx's trainer (and
# the suite ran 10 % faster). Set before JAX starts its backend, and only on the jaxlib line that
# knows the flag (XLA aborts on unknown flags); child processes inherit it.
_YNN_OFF = "--xla_cpu_experimental_ynn_fusion_type="
if importlib.metadata.version("jaxlib").startswith("0.10.") and _YNN_OFF.split("=")[0] not in (
    os.environ.get("XLA_FLAGS", "")
):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_YNN_OFF}".strip()

# XLA's backend optimisations off (LLVM at -O0, no expensive passes): the suite's cost is compiling
# thousands of small programs, not running them, and this takes a third off it (the architecture
# and property tests, cold: 242 s -> 164 s). What a program computes is the same either way; the
# benchmarks and experiments run optimised, and JAX_DISABLE_MOST_OPTIMIZATIONS=0 runs the suite
# optimised too. Child processes inherit it.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import hypothesis  # noqa: E402
import jax  # noqa: E402

# Parity and property tests compare against float64 references.
jax.config.update("jax_enable_x64", True)

# Many tests compile the same program (a method's update on the same shapes, in the contract,
# property and optax-contract files, on both xdist workers): a persistent compilation cache shared
# by the run's workers compiles each once. MTLX_TEST_JAX_CACHE="" turns it off.
_cache = os.environ.get(
    "MTLX_TEST_JAX_CACHE", os.path.join(tempfile.gettempdir(), "mtlx-test-jax-cache")
)
if _cache:
    jax.config.update("jax_compilation_cache_dir", _cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    # The same for the Python processes tests start (fault tolerance, multi-process, CLI runs):
    # they compile the same programs launch after launch.
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

# JAX compiles on an example's first run: a per-example deadline would time XLA, not the property.
hypothesis.settings.register_profile("dev", deadline=None, max_examples=25)
# CI: fewer examples, derandomized (the same examples every run); compiling each new shape, not
# running an example, is what a property test costs.
hypothesis.settings.register_profile("ci", deadline=None, max_examples=15, derandomize=True)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def pytest_collection_modifyitems(config, items):
    """The experiment and config smoke tests (tests/experiments/: whole scripts, each compiling
    its own models) are ``slow``: ``pytest -m "not slow"`` is the quick subset."""
    import pytest

    for item in items:
        if item.nodeid.startswith("tests/experiments/"):
            item.add_marker(pytest.mark.slow)


# Every compiled XLA:CPU program keeps about 6 memory mappings while it lives, and jit caches keep
# every program of the run alive: a worker running half of the suite passed Linux's limit of
# 65,530 mappings per process (vm.max_map_count), after which XLA's next mmap fails and the worker
# dies with SIGSEGV inside a compilation (test_properties.py alone leaves 18,800 mappings). Every
# 10 tests, past half the limit, the caches are dropped (the persistent cache serves what is
# compiled again).
def _mapping_budget() -> int | None:
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            return int(f.read()) // 2
    except (OSError, ValueError):  # not Linux: no such limit to watch
        return None


_MAPPING_BUDGET = _mapping_budget()
_tests_run = 0


def _mappings() -> int:
    with open("/proc/self/maps", "rb") as f:
        return sum(1 for _ in f)


def pytest_runtest_teardown(item, nextitem):
    global _tests_run
    _tests_run += 1
    if _MAPPING_BUDGET and _tests_run % 10 == 0 and _mappings() > _MAPPING_BUDGET:
        jax.clear_caches()
