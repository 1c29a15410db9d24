"""The dependency direction of the packages, enforced on the source (no cycles, light core)."""

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "mtlx"
THIRD_PARTY_HEAVY = (
    "flax",
    "orbax",
    "tensorflow_datasets",
    "tensorflow",
    "grain",
    "torch",
    "matplotlib",
)

# package -> the mtlx packages it may import (besides itself)
ALLOWED_MTLX = {
    "mtlx._src": set(),
    "mtlx.weighting": {"mtlx._src"},
    "mtlx.jacobian": {"mtlx._src"},
    "mtlx.analysis": {"mtlx._src", "mtlx.jacobian", "mtlx.weighting"},
    "mtlx.models": {"mtlx._src"},  # layer and path names
    "mtlx.data": set(),
    "mtlx.training": {
        "mtlx",
        "mtlx._src",
        "mtlx.jacobian",
        "mtlx.weighting",
        "mtlx.analysis",
        "mtlx.models",
        "mtlx.data",
    },
    "mtlx.train": {"mtlx", "mtlx.training", "mtlx.models", "mtlx.data", "mtlx.analysis"},
}
# package -> third-party top-level modules it must not import at module level or anywhere
FORBIDDEN_THIRD_PARTY = {
    "mtlx._src": THIRD_PARTY_HEAVY,
    "mtlx.weighting": THIRD_PARTY_HEAVY,
    "mtlx.jacobian": THIRD_PARTY_HEAVY,
    "mtlx.analysis": ("flax", "orbax", "tensorflow_datasets", "tensorflow", "grain", "torch"),
    "mtlx.data": ("flax", "orbax", "tensorflow", "torch"),
    "mtlx.models": ("orbax", "tensorflow_datasets", "tensorflow", "grain", "torch"),
}


def _package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def _modules():
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


@pytest.mark.parametrize("module, path", list(_modules()), ids=lambda x: str(x))
def test_dependency_direction(module, path):
    package = _package_of(module)
    if package == "mtlx":
        return  # the top-level __init__ re-exports the public API
    allowed = ALLOWED_MTLX.get(package, set()) | {package}
    for imported in _imports(path):
        top = imported.split(".")[0]
        if top == "mtlx":
            target = _package_of(imported)
            assert target in allowed, (
                f"{module} imports {imported}: {package} may import {sorted(allowed)}"
            )
        else:
            assert top not in FORBIDDEN_THIRD_PARTY.get(package, ()), f"{module} imports {imported}"


def test_import_mtlx_needs_only_jax_numpy_optax():
    code = (
        "import sys, mtlx, mtlx.jacobian, mtlx.weighting;"
        f"heavy = [m for m in {THIRD_PARTY_HEAVY!r} if m in sys.modules];"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
