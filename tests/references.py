"""Reference implementations (TorchJD, LibMTL) as test oracles; tests skip where they are absent.

LibMTL's package ``__init__`` imports its models, which need torchvision; its ``weighting``
modules do not, so they are loaded from their files under a bare ``LibMTL`` package.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="reference tests need torch (pip install torch==2.13.0)"
)


def torchjd_aggregation():
    return pytest.importorskip("torchjd.aggregation", reason="needs torchjd")


def torchjd_scalarization():
    return pytest.importorskip("torchjd.scalarization", reason="needs torchjd")


def libmtl_weighting(name: str):
    """The LibMTL weighting class ``name`` (e.g. "MGDA"), loaded without LibMTL's models."""
    if not hasattr(sys.modules.get("LibMTL"), "_mtlx_stub"):
        spec = importlib.util.find_spec("LibMTL")
        if spec is None or not spec.submodule_search_locations:
            pytest.skip("needs LibMTL (pip install --no-deps LibMTL==1.1.5)")
        root = list(spec.submodule_search_locations)[0]
        package = types.ModuleType("LibMTL")
        package.__path__ = [root]
        package._mtlx_stub = True
        sys.modules["LibMTL"] = package
        weighting = types.ModuleType("LibMTL.weighting")
        weighting.__path__ = [f"{root}/weighting"]
        sys.modules["LibMTL.weighting"] = weighting
    module = importlib.import_module(f"LibMTL.weighting.{name}")
    return getattr(module, name)


def to_torch(x) -> "torch.Tensor":
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def to_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy().astype(np.float64)


def assert_parity(ours, reference, *, cos_min=0.999, norm_rtol=0.01, atol=1e-9):
    """Cosine >= cos_min and norms within norm_rtol (both ~0 also passes)."""
    ours, reference = np.ravel(ours), np.ravel(reference)
    n_ours, n_ref = np.linalg.norm(ours), np.linalg.norm(reference)
    if n_ref <= atol and n_ours <= atol:
        return
    cos = float(ours @ reference / max(n_ours * n_ref, 1e-300))
    assert cos >= cos_min, (
        f"cosine {cos:.6f} < {cos_min}: ours={ours[:6]}, reference={reference[:6]}"
    )
    assert abs(n_ours - n_ref) <= norm_rtol * n_ref + atol, (
        f"norms differ: ours {n_ours:.6g}, reference {n_ref:.6g}"
    )
