"""Two local processes x 2 CPU devices train like one process on 4 devices; a killed run resumes.

The processes form a JAX cluster over loopback (``jax.distributed`` with a coordinator on
127.0.0.1 and gloo CPU collectives), started by ``tests/training/multiprocess_worker.py``. The
task axis of the Jacobian (T = 4) spans both processes (``task_devices=4``), or the data axis does
(``task_devices=2``: each process loads half of every batch). Skipped where jaxlib has no gloo.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from mtlx.training import Checkpointer, distributed

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKER = os.path.join(ROOT, "tests", "training", "multiprocess_worker.py")
TIMEOUT = 240

_gloo, _why = distributed.gloo_available()
needs_gloo = pytest.mark.skipif(not _gloo, reason=f"multi-process CPU training needs gloo: {_why}")

TASKS = ["left", "right", "sum_parity", "left_greater"]  # T = 4: one task per device
BASE = {
    "dataset_kwargs": {"tasks": TASKS},
    "model_kwargs": {"hidden": [32]},
    "num_steps": 30,
    "steps_per_call": 10,
    "batch_size": 64,  # the 449 test examples: one padded, masked evaluation batch
    "progress": False,
    "num_devices": 4,
}
RUNS = {
    "pcgrad_task4": {**BASE, "method": "pcgrad", "task_devices": 4},
    "upgrad_task4": {**BASE, "method": "upgrad", "task_devices": 4},
    "pcgrad_data2_task2": {**BASE, "method": "pcgrad", "task_devices": 2},
}
CHECKPOINTED = {"checkpoint_every": 10, "log_every": 10}
# The CLI's flags for RUNS["pcgrad_task4"] + CHECKPOINTED: the resumed run goes through the CLI.
CLI = [
    "--method", "pcgrad", "--dataset-kwargs", json.dumps({"tasks": TASKS}),
    "--model-kwargs", "hidden=[32]", "--steps", "30", "--steps-per-call", "10",
    "--batch-size", "64", "--num-devices", "4", "--task-devices", "4", "--checkpoint-every", "10",
    "--log-every", "10", "--no-progress", "--baselines", "none", "--json",
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int, cache: str) -> dict:
    return {
        **os.environ,
        # Appended to the suite's own flags (tests/conftest.py), which the workers keep.
        "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} "
        f"--xla_force_host_platform_device_count={devices}".strip(),
        "JAX_PLATFORMS": "cpu",
        # The killed and the resumed run compile what the whole run compiled: reuse it.
        "JAX_COMPILATION_CACHE_DIR": cache,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }


def _start(command: list, env: dict, log: str) -> subprocess.Popen:
    with open(log, "w") as f:
        return subprocess.Popen(
            command,
            env=env,
            cwd=ROOT,
            stdout=f,
            stderr=subprocess.STDOUT,
        )


def _launch(tmp, name: str, runs: dict, *, processes: int, hold_after=None):
    """Starts ``processes`` workers (2 devices each; 1 process: 4 devices)."""
    port = _free_port()
    procs, outs, logs = [], [], []
    for i in range(processes):
        spec = {"runs": runs, "out": str(tmp / f"{name}-{i}.json")}
        if processes > 1:
            spec.update(coordinator=f"127.0.0.1:{port}", num_processes=processes, process_id=i)
        if hold_after is not None:
            spec["hold_after"] = hold_after
        logs.append(str(tmp / f"{name}-{i}.log"))
        outs.append(spec["out"])
        env = _env(4 // processes, str(tmp / "jax-cache"))
        procs.append(_start([sys.executable, WORKER, json.dumps(spec)], env, logs[-1]))
    return procs, outs, logs


def _tail(logs) -> str:
    text = []
    for log in logs:
        with open(log) as f:
            lines = [x for x in f.read().splitlines() if not x.startswith("[Gloo]")]
        text.append(f"--- {log}\n" + "\n".join(lines[-40:]))
    return "\n".join(text)


def _kill(procs) -> None:
    """SIGKILL what still runs (jax.distributed catches SIGTERM as a preemption notice)."""
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def _finish(procs, outs, logs) -> list[dict]:
    deadline = time.monotonic() + TIMEOUT
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        _kill(procs)
    assert all(p.returncode == 0 for p in procs), _tail(logs)
    results = []
    for out in outs:
        with open(out) as f:
            results.append(json.load(f))
    return results


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multiprocess")
    two = {**RUNS}
    two["pcgrad_task4"] = {**RUNS["pcgrad_task4"], **CHECKPOINTED, "workdir": str(tmp / "whole")}
    both = _launch(tmp, "two", two, processes=2), _launch(tmp, "one", RUNS, processes=1)
    try:  # side by side: 3 processes
        multi, (one,) = (_finish(*launched) for launched in both)
    finally:
        _kill(p for procs, _, _ in both for p in procs)
    return {"tmp": tmp, "one": one, "multi": multi}


@needs_gloo
def test_two_processes_form_one_mesh(runs):
    for i, out in enumerate(runs["multi"]):
        assert out["multi"] and out["process_count"] == 2 and out["process_index"] == i
        assert out["devices"] == 4
        for run in out["runs"].values():
            assert run["mesh_devices"] == 4 and run["replicated"]
    assert not runs["one"]["multi"] and runs["one"]["process_count"] == 1


@needs_gloo
@pytest.mark.parametrize("name", sorted(RUNS))
def test_two_processes_equal_one_process_on_four_devices(runs, name):
    ref = np.asarray(runs["one"]["runs"][name]["params"])
    p0, p1 = (np.asarray(out["runs"][name]["params"]) for out in runs["multi"])
    np.testing.assert_array_equal(p0, p1)  # both processes hold the same replicated state
    diff = np.abs(p0 - ref).max()
    print(f"{name}: max |2-process - 1-process| = {diff:.3g}")
    np.testing.assert_allclose(p0, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
    one, two = runs["one"]["runs"][name], runs["multi"][0]["runs"][name]
    for task, metrics in one["results"].items():
        # Evaluation is split over the processes' rows and reduced globally.
        np.testing.assert_allclose(two["results"][task]["accuracy"], metrics["accuracy"], atol=0.01)
        np.testing.assert_allclose(two["eval_losses"][task], one["eval_losses"][task], rtol=1e-3)


@needs_gloo
def test_logs_are_written_once(runs):
    workdir = runs["tmp"] / "whole"
    with open(workdir / "log.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert len(records) == runs["multi"][0]["runs"]["pcgrad_task4"]["history"]
    assert [r["step"] for r in records if "train/loss/left" in r] == [10, 20, 30]
    assert sorted(os.listdir(workdir / "checkpoints")) == ["10", "20", "30"]


@needs_gloo
def test_killed_two_process_run_resumes_bit_exactly_through_the_cli(runs):
    """SIGKILL both processes after checkpoint 20, then rerun the same run with the CLI (process
    0 configured by flags, process 1 by the environment): the state at step 30 is the
    uninterrupted run's, bit for bit."""
    tmp = runs["tmp"]
    workdir = tmp / "killed" / "pcgrad"  # the CLI's <workdir>/<method>
    config = {**RUNS["pcgrad_task4"], **CHECKPOINTED, "workdir": str(workdir)}
    procs, _, logs = _launch(tmp, "killed", {"pcgrad_task4": config}, processes=2, hold_after=20)
    deadline = time.monotonic() + TIMEOUT
    try:
        while not all("HOLDING" in open(log).read() for log in logs):
            assert all(p.poll() is None for p in procs), _tail(logs)
            assert time.monotonic() < deadline, _tail(logs)
            time.sleep(0.1)
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.wait()
    assert all(p.returncode == -signal.SIGKILL for p in procs)
    assert sorted(os.listdir(workdir / "checkpoints")) == ["10", "20"]

    address = f"127.0.0.1:{_free_port()}"
    cli = [sys.executable, "-m", "mtlx.train", *CLI, "--workdir", str(tmp / "killed")]
    env = _env(2, str(tmp / "jax-cache"))
    flags = ["--coordinator", address, "--num-processes", "2", "--process-id", "0"]
    variables = {"JAX_COORDINATOR_ADDRESS": address, "JAX_NUM_PROCESSES": "2"}
    logs = [str(tmp / f"resumed-{i}.log") for i in range(2)]
    procs = [
        _start(cli + flags, env, logs[0]),
        _start(cli, {**env, **variables, "JAX_PROCESS_ID": "1"}, logs[1]),
    ]
    try:
        for p in procs:
            p.wait(timeout=TIMEOUT)
    finally:
        _kill(procs)
    assert all(p.returncode == 0 for p in procs), _tail(logs)
    said = [open(log).read() for log in logs]
    assert "resumed from step 20" in said[0] and "resumed from step" not in said[1]
    printed = [json.loads(x) for x in said[0].splitlines() if x.startswith('{"method"')]
    assert not any(x.startswith('{"method"') for x in said[1].splitlines())  # 0 alone prints

    whole = runs["multi"][0]["runs"]["pcgrad_task4"]
    assert len(printed) == 1 and printed[0]["results"] == whole["results"]
    (whole_state, whole_at), (state, at) = (
        Checkpointer(directory / "checkpoints").restore_arrays(30)
        for directory in (tmp / "whole", workdir)
    )
    assert whole_at == at == {"step": 30}
    leaves, ref = jax.tree.leaves(state), jax.tree.leaves(whole_state)
    assert len(leaves) == len(ref) > 4  # step, parameters, Adam moments, the method's PRNG key
    for a, b in zip(leaves, ref):
        np.testing.assert_array_equal(a, b)
    params = np.concatenate([np.ravel(x) for x in jax.tree.leaves(state["params"])])
    np.testing.assert_array_equal(params, whole["params"])
    with open(workdir / "log.jsonl") as f:
        steps = [json.loads(line)["step"] for line in f]
    assert steps == [10, 20, 30, 30]  # the killed run's records, then the resumed run's


def test_initialize_without_a_cluster_stays_single_and_errors_name_the_fix(monkeypatch):
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.initialize() is False  # nothing given: one process, nothing initialised
    assert distributed.initialize("127.0.0.1:1234", 1, 0) is False
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES"):
        distributed.initialize("127.0.0.1:1234")
    with pytest.raises(ValueError, match="--coordinator HOST:PORT"):
        distributed.initialize(num_processes=2, process_id=0)
    with pytest.raises(ValueError, match=r"process_id must be in 0\.\.1"):
        distributed.initialize("127.0.0.1:1234", 2, 2)
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES must be an integer"):
        distributed.initialize("127.0.0.1:1234")
    assert not distributed.is_multiprocess() and distributed.is_writer()


def test_mesh_settings_are_validated_with_the_fix():
    from mtlx.training import TrainConfig

    with pytest.raises(ValueError, match=r"divisible by the data-parallel devices.*batch_size=64"):
        TrainConfig(num_devices=4, task_devices=2, batch_size=63).validate()
    with pytest.raises(ValueError, match=r"task_devices \(3\) must divide num_devices \(4\)"):
        TrainConfig(num_devices=4, task_devices=3).validate()
    TrainConfig(num_devices=4, task_devices=4, batch_size=63).validate()  # data axis of 1
