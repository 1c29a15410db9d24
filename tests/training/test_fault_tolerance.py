"""A training process killed with SIGKILL (between saves and during one) resumes to the same end.

Each run is a fresh Python process running ``mtlx.training.train`` with checkpoints every 4 steps
in one workdir. The interrupted run is killed three times: twice from outside once a checkpoint has
appeared, once from inside while orbax is writing a checkpoint (the process kills itself in the
middle of ``save``). Rerunning the same command resumes from the newest complete checkpoint; its
final parameters must equal an uninterrupted run's bit for bit.
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

if sys.platform == "win32":  # pragma: no cover - SIGKILL is POSIX
    pytest.skip("SIGKILL is POSIX-only", allow_module_level=True)

CHILD = r"""
import os, signal, sys
import numpy as np
import jax
from mtlx.training import TrainConfig, train
from mtlx.training import checkpoint as checkpoint_lib

workdir, out, kill_at_save = sys.argv[1], sys.argv[2], int(sys.argv[3])
if kill_at_save:
    # Die inside the kill_at_save-th save: orbax has started writing this step's files.
    original = checkpoint_lib.Checkpointer.save
    calls = [0]

    def dying_save(self, state, position, *, metadata=None, wait=True):
        calls[0] += 1
        if calls[0] == kill_at_save:
            original(self, state, position, metadata=metadata, wait=False)
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, state, position, metadata=metadata, wait=wait)

    checkpoint_lib.Checkpointer.save = dying_save
config = TrainConfig(
    dataset="digits", dataset_kwargs={"num_train": 256, "num_test": 64},
    model="mlp_hps", model_kwargs={"hidden": (32,)}, method="pcgrad",
    num_steps=32, steps_per_call=4, batch_size=32, eval_every=0,
    checkpoint_every=4, workdir=workdir, seed=3,
)
result = train(config)
np.savez(out, *[np.asarray(x) for x in jax.tree.leaves(result.state.params)])
"""


def _run(workdir, out, *, kill_at_save=0, timeout=240):
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(workdir), str(out), str(kill_at_save)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _checkpoint_steps(workdir):
    root = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(root):
        return []
    return sorted(int(name) for name in os.listdir(root) if name.isdigit())


def _kill_after_new_checkpoint(workdir, out, timeout=240):
    """Starts a run and SIGKILLs it as soon as a checkpoint newer than the existing ones lands."""
    before = max(_checkpoint_steps(workdir), default=-1)
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(workdir), str(out), "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if max(_checkpoint_steps(workdir), default=-1) > before:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _params(path):
    with np.load(path) as data:
        return [data[k] for k in sorted(data.files, key=lambda k: int(k.split("_")[1]))]


def test_sigkill_between_and_during_saves_resumes_to_the_uninterrupted_result(tmp_path):
    reference = _run(tmp_path / "reference", tmp_path / "reference.npz")
    assert reference.returncode == 0, reference.stderr[-2000:]

    workdir, out = tmp_path / "killed", tmp_path / "killed.npz"
    _kill_after_new_checkpoint(workdir, out)
    dying = _run(workdir, out, kill_at_save=2)  # dies inside its second save
    assert dying.returncode == -signal.SIGKILL, dying.stderr[-2000:]
    _kill_after_new_checkpoint(workdir, out)
    assert not out.exists()

    final = _run(workdir, out)
    assert final.returncode == 0, final.stderr[-2000:]
    assert "resumed from step" in final.stdout + final.stderr
    for a, b in zip(_params(out), _params(tmp_path / "reference.npz"), strict=True):
        np.testing.assert_array_equal(a, b)
