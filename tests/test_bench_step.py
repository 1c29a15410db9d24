"""Smoke test of benchmarks/bench_step.py: its main() on tiny sizes writes the rows and columns.

Seconds long: a 256-16 MLP at T = 2 (EW, MGDA and MGDA with one Jacobian row at a time) and a
one-stage SegNet-style net on 8x10 images (EW and the bare Jacobian step: every segnet compile
costs seconds on 2 cores), one step each, XLA's optimisations off (compiling is what this costs).
The mtlx columns are checked without torch; the TorchJD and LibMTL columns where those are
installed (None where they are not).
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import shutil
import subprocess
import sys

import jax
import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"
TINY = ["--steps", "1", "--rounds", "1", "--warmup", "1", "--torch-threads", "1"]
MLP_ARGS = ["--model", "mlp", "--tasks", "2", "--hidden", "16", "--batch", "8"]
MLP_ARGS += ["--methods", "ew,mgda", "--chunk-size", "1", *TINY]
SEGNET_ARGS = ["--model", "segnet", "--image-size", "8", "--hidden", "4", "--batch", "2"]
SEGNET_ARGS += ["--methods", "ew", *TINY]


def _installed(*names):
    return all(
        hasattr(sys.modules.get(n), "_mtlx_stub") or importlib.util.find_spec(n) is not None
        for n in names
    )  # (LibMTL's stub, tests/references.py's and bench_step's, has no __spec__)


@pytest.fixture(scope="module")
def bench_step():
    spec = importlib.util.spec_from_file_location("bench_step", BENCHMARKS / "bench_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def results(bench_step, tmp_path_factory):
    """model -> (the JSON written, the markdown written); global settings restored afterwards."""
    out = tmp_path_factory.mktemp("bench")
    precision = jax.config.values["jax_default_matmul_precision"]
    optimizations = jax.config.values["jax_disable_most_optimizations"]
    torch_settings = None
    if _installed("torch"):
        import torch

        torch_settings = (
            torch.get_num_threads(),
            torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32,
        )
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        bench_step.main([*MLP_ARGS, "--out", str(out)])
        bench_step.main([*SEGNET_ARGS, "--out", str(out)])
    finally:
        jax.config.update("jax_default_matmul_precision", precision)
        jax.config.update("jax_disable_most_optimizations", optimizations)
        if torch_settings is not None:
            torch.set_num_threads(torch_settings[0])
            torch.backends.cuda.matmul.allow_tf32 = torch_settings[1]
            torch.backends.cudnn.allow_tf32 = torch_settings[2]
    platform = jax.devices()[0].platform
    return {
        model: (
            json.loads((out / f"step_{platform}_{model}.json").read_text()),
            (out / f"step_{platform}_{model}.md").read_text(),
        )
        for model in ("mlp", "segnet")
    }


@pytest.mark.parametrize(
    "model, methods, tasks",
    [
        ("mlp", {"(bare jacobian)", "ew", "mgda", "chunk1:mgda"}, 2),
        ("segnet", {"(bare jacobian)", "ew"}, 3),
    ],
)
def test_mtlx_rows_and_memory(results, model, methods, tasks):
    data, markdown = results[model]
    rows = {r["method"]: r for r in data["rows"]}
    assert set(rows) == methods
    for r in rows.values():
        assert r["num_tasks"] == tasks
        assert r["ms"] > 0 and r["p90_ms"] >= r["ms"] and r["warmup_s"] > 0
        assert r["xla_step_mib"] > 0 and 0 <= r["xla_temp_mib"] <= r["xla_step_mib"]
        assert r["vs_ew"] > 0 and r["vs_bare_jacobian"] > 0
    assert rows["ew"]["kind"] == "loss-only" and rows["(bare jacobian)"]["kind"] == "reference"
    if model == "mlp":
        assert rows["chunk1:mgda"]["kind"] == "chunked"
        assert rows["chunk1:mgda"]["reads"] == "gramian"
    assert data["meta"]["peak_rss_mib"] > 0
    assert data["meta"]["device"] in markdown and "XLA MiB (temp)" in markdown
    assert "Step memory vs the EW step" in markdown


@pytest.mark.parametrize("model, compared", [("mlp", ("ew", "mgda")), ("segnet", ("ew",))])
def test_torch_columns(results, model, compared):
    pytest.importorskip("torch")
    rows = {r["method"]: r for r in results[model][0]["rows"]}
    for lib, modules in (("torchjd", ("torchjd",)), ("libmtl", ("LibMTL",))):
        for name in compared:
            if _installed(*modules):
                assert rows[name][f"{lib}_ms"] > 0, (lib, name)
                assert rows[name][f"speedup_vs_{lib}"] > 0
            else:
                assert rows[name][f"{lib}_ms"] is None
        assert rows["(bare jacobian)"][f"{lib}_ms"] is None  # no reference counterpart
    if model == "mlp":
        assert rows["chunk1:mgda"]["torchjd_ms"] is None  # variants compare within mtlx


def test_segnet_has_three_tasks(bench_step):
    with pytest.raises(SystemExit):
        bench_step.main(["--model", "segnet", "--tasks", "2", "--no-torchjd", "--no-libmtl"])


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_run_gpu_script_parses():
    subprocess.run(["bash", "-n", str(BENCHMARKS / "run_gpu.sh")], check=True)


def test_dry_run_lists_the_split_heads_and_xla_defaults_rows(bench_step, capsys):
    bench_step.main(
        ["--model", "mlp", "--tasks", "2", "--methods", "ew,mgda", "--split-heads",
         "--compare-xla-defaults", "--no-torchjd", "--no-libmtl", "--dry-run"]
    )  # fmt: skip
    printed = "".join(capsys.readouterr())
    for row in ("split:mgda", "xla-defaults:mgda", "xla-defaults:(bare jacobian)"):
        assert row in printed
    assert "split:ew" not in printed and "xla-defaults:ew" not in printed  # loss-only: one pass
