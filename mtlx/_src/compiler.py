"""XLA compiler options under which a Jacobian step runs at its floor on each backend."""

from __future__ import annotations

import functools

import jax
import numpy as np

# XLA:CPU (jaxlib 0.10) hands float32 dots to YNNPACK fusions by default. For the Gramian's shape,
# (T x P) @ (P x T) with P >> T, YNNPACK ran at half the speed of XLA's Eigen path on a 2-core
# x86 machine (T = 40, P = 657k: 64-71 ms against 29-33 ms; torch's MKL 20 ms). With the option,
# side by side, the MLP's Jacobian step at T = 40 was 14 % faster and the Gramian methods' 5-17 %
# (benchmarks/README.md); the ResNet's convolutions and EW ran at the same speed either way.
_CPU_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.cache
def _supported_cpu_options() -> tuple[tuple[str, str], ...]:
    # A jaxlib that does not know an option refuses the whole compilation ("No such compile
    # option"), so each is tried once on a trivial program and dropped if refused.
    supported = []
    cpu = jax.devices("cpu")[0]
    for key, value in _CPU_OPTIONS.items():
        probe = jax.jit(lambda x: x + 1, compiler_options={key: value})
        try:
            probe(jax.device_put(np.zeros((), np.float32), cpu))
        except Exception:  # noqa: BLE001 - any refusal means "not supported here"
            continue
        supported.append((key, value))
    return tuple(supported)


def jit_compiler_options(backend: str | None = None) -> dict[str, str]:
    """XLA compiler options for a jitted step that computes Jacobian Gramians.

    Pass them to ``jax.jit(step, compiler_options=mtlx.jit_compiler_options())``; mtlx's trainer
    (:func:`mtlx.training.make_train_step`) does. On CPU they turn off XLA:CPU's YNNPACK dot
    fusions, which compute the T x T Gramian ``J J^T`` of a long Jacobian (P >> T) at about half
    the speed of XLA's default Eigen path; elsewhere they are empty. The program's results are the
    same up to float rounding (another summation order).

    Args:
      backend: the platform the step compiles for ("cpu", "gpu", "tpu"); default: JAX's default
        backend.

    Returns:
      A dict for ``jax.jit``'s ``compiler_options`` (empty where nothing applies, or where this
      jaxlib does not know an option).
    """
    platform = backend or jax.default_backend()
    if platform != "cpu":
        return {}
    return dict(_supported_cpu_options())
