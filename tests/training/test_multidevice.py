"""Data-parallel training on an 8-device CPU mesh equals the 1-device run up to float error.

JAX fixes the number of CPU devices when it starts, so the runs happen in a subprocess started
with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mtlx.training import make_mesh

SCRIPT = textwrap.dedent(
    """
    import json
    import jax
    import numpy as np
    from mtlx.training import TrainConfig, train

    assert jax.device_count() == 8, jax.devices()
    base = TrainConfig(method="pcgrad", num_steps=20, steps_per_call=10, batch_size=64,
                       model_kwargs={"hidden": (32,)}, progress=False)
    runs = {
        "one_device": base,
        "data8": base.replace(num_devices=8),
        "data4_task2": base.replace(num_devices=8, task_devices=2),
    }
    out = {}
    for name, config in runs.items():
        result = train(config)
        params = [np.asarray(x).ravel() for x in jax.tree.leaves(result.state.params)]
        replicated = all(x.sharding.is_fully_replicated for x in jax.tree.leaves(result.state))
        out[name] = {"params": np.concatenate(params).tolist(), "results": result.results,
                     "devices": len(jax.tree.leaves(result.state.params)[0].devices()),
                     "replicated": replicated}
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def runs():
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
    }
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


@pytest.mark.parametrize("name", ["data8", "data4_task2"])
def test_mesh_run_equals_one_device_run(runs, name):
    one, mesh = runs["one_device"], runs[name]
    assert one["devices"] == 1 and mesh["devices"] == 8  # params replicated on all 8 devices
    assert mesh["replicated"]  # the whole state (params, optimizer, PRNG keys) stays replicated
    ref = np.asarray(one["params"])
    np.testing.assert_allclose(mesh["params"], ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
    for task, metrics in one["results"].items():
        np.testing.assert_allclose(
            metrics["accuracy"], mesh["results"][task]["accuracy"], atol=0.01
        )


def test_mesh_errors_are_clear():
    with pytest.raises(ValueError, match="xla_force_host_platform_device_count"):
        make_mesh(10_000)
    with pytest.raises(ValueError, match="must divide"):
        make_mesh(1, task=2)
