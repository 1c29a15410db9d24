"""Multi-process training through JAX's multi-controller runtime (``jax.distributed``).

One process runs per host (or, to test on one machine, several processes on one host), each
started with the same command and configuration, and :func:`initialize` connects them before JAX
computes anything. Then :func:`mtlx.training.train` builds its mesh over every process's devices
(``jax.devices()`` is global), each process reads only its own rows of every global batch
(:func:`process_rows`, :func:`global_batch`), metrics, Δm and losses are reduced over the global
mesh, logs are written by process 0 alone (:func:`is_writer`) and orbax writes each checkpoint
from all processes together.

Where the connection comes from, first found first:

- the arguments of :func:`initialize` (the CLI's ``--coordinator HOST:PORT --num-processes N
  --process-id I``);
- the environment: ``JAX_COORDINATOR_ADDRESS`` (read by JAX itself too), ``JAX_NUM_PROCESSES``
  and ``JAX_PROCESS_ID``;
- ``auto=True``: JAX's own detection of a cluster (SLURM, Open MPI, Kubernetes, Cloud TPU).

With none of them, or one process, nothing is initialised and training is single-process as
before. On CPU the cross-process collectives go through gloo
(``jax_cpu_collectives_implementation="gloo"``, set here); GPUs use NCCL.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

PyTree = Any

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"

_initialized = False


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer; got {value!r}.") from None


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    auto: bool = False,
    local_device_ids: Sequence[int] | None = None,
    initialization_timeout: int = 300,
) -> bool:
    """Connects this process to the others (``jax.distributed.initialize``); call it first.

    Args:
      coordinator_address: ``HOST:PORT`` of process 0's coordinator service, the same on every
        process (default: ``$JAX_COORDINATOR_ADDRESS``).
      num_processes: processes in the run (default: ``$JAX_NUM_PROCESSES``).
      process_id: this process's rank, ``0 .. num_processes - 1`` (default:
        ``$JAX_PROCESS_ID``). Process 0 hosts the coordinator and writes the logs.
      auto: with no address in the arguments or the environment, let JAX detect the cluster
        (SLURM, Open MPI, ...); without ``auto`` such a process stays single.
      local_device_ids: the local devices this process uses (default: all of them).
      initialization_timeout: seconds to wait for every process to connect.

    Returns:
      ``True`` when the process joined a multi-process run, ``False`` when it runs alone.

    Raises:
      ValueError: an address without a process count or id (the message names the variables),
        an id out of range, or gloo missing from this jaxlib on CPU.
      RuntimeError: JAX had already computed something (initialise before any JAX call).
    """
    global _initialized
    if _initialized:
        return jax.process_count() > 1
    address = coordinator_address or os.environ.get(ENV_COORDINATOR) or None
    count = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
    rank = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
    if address is None and count is None and rank is None and not auto:
        return False
    if count == 1 and (rank in (None, 0)):
        return False
    if address is not None and (count is None or rank is None):
        raise ValueError(
            f"a multi-process run needs the coordinator address, the process count and this "
            f"process's id; got address={address!r}, num_processes={count!r}, process_id="
            f"{rank!r}. Pass --coordinator HOST:PORT --num-processes N --process-id I, or set "
            f"{ENV_COORDINATOR}, {ENV_NUM_PROCESSES} and {ENV_PROCESS_ID}."
        )
    if address is None and not auto:
        raise ValueError(
            f"num_processes={count!r} / process_id={rank!r} without a coordinator address: pass "
            f"--coordinator HOST:PORT (or set {ENV_COORDINATOR}) on every process."
        )
    if count is not None and (count < 1 or rank is None or not 0 <= rank < count):
        raise ValueError(
            f"process_id must be in 0..{count - 1} for num_processes={count}; got {rank!r}."
        )
    use_gloo()
    jax.distributed.initialize(
        coordinator_address=address,
        num_processes=count,
        process_id=rank,
        local_device_ids=local_device_ids,
        initialization_timeout=initialization_timeout,
    )
    _initialized = True
    return jax.process_count() > 1


def use_gloo() -> None:
    """Routes CPU cross-process collectives through gloo (a no-op for GPU and TPU devices).

    Raises:
      ValueError: this jaxlib has no gloo collectives (the message says so).
    """
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except Exception as e:  # an unknown option or value in this jaxlib
        raise ValueError(
            f"this jaxlib ({jax.__version__}) has no gloo CPU collectives ({e}); multi-process "
            "training on CPU needs them (jaxlib >= 0.4.27 built with gloo)."
        ) from e


def gloo_available() -> tuple[bool, str]:
    """Whether this jaxlib has gloo CPU collectives, and why not when it has none."""
    try:
        from jax._src.lib import _jax  # where jaxlib keeps its collectives factories
    except ImportError as e:  # pragma: no cover - another jaxlib layout
        return False, f"jaxlib {jax.__version__} exposes no collectives module ({e})"
    if not hasattr(_jax, "make_gloo_tcp_collectives"):
        return False, f"jaxlib {jax.__version__} was built without gloo CPU collectives"
    return True, "gloo CPU collectives available"


def process_count() -> int:
    return jax.process_count()


def is_multiprocess() -> bool:
    """Whether this run spans several processes."""
    return jax.process_count() > 1


def is_writer() -> bool:
    """Whether this process writes logs, results and plots (process 0)."""
    return jax.process_index() == 0


def sync(name: str) -> None:
    """Waits until every process reaches the barrier ``name`` (a no-op in a single process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def process_rows(
    sharding: jax.sharding.Sharding, global_shape: Sequence[int], axis: int
) -> tuple[int, int]:
    """The rows ``[start, stop)`` along ``axis`` of a global array that this process holds.

    Raises:
      ValueError: the process's devices hold rows that are not one contiguous range (a mesh
        whose data axis interleaves processes).
    """
    indices = sharding.addressable_devices_indices_map(tuple(global_shape)).values()
    size = int(global_shape[axis])
    ranges = sorted({_range(index[axis], size) for index in indices})
    start, stop = ranges[0][0], ranges[0][1]
    for lo, hi in ranges[1:]:
        if lo > stop:
            raise ValueError(
                f"process {jax.process_index()} holds the rows {ranges} of axis {axis}: not one "
                "contiguous range; order the mesh's devices by process (make_mesh does)."
            )
        stop = max(stop, hi)
    return start, stop


def _range(index: Any, size: int) -> tuple[int, int]:
    if isinstance(index, slice):
        start, stop, _ = index.indices(size)
        return start, stop
    return int(index), int(index) + 1


def global_batch(
    local: Mapping[str, Any],
    sharding_of: Any,
    global_rows: int,
    axis: int,
) -> dict[str, jax.Array]:
    """Global arrays from this process's rows of every batch array.

    Args:
      local: this process's rows (:func:`process_rows` along ``axis``) of every array.
      sharding_of: ``ndim -> Sharding`` of an array with that many dimensions.
      global_rows: the global size of ``axis``.
      axis: the batch axis.
    """

    def put(x):
        x = np.asarray(x)
        shape = list(x.shape)
        shape[axis] = global_rows
        return jax.make_array_from_process_local_data(sharding_of(x.ndim), x, tuple(shape))

    return {k: put(v) for k, v in local.items()}


def gather(source: Any, indices: np.ndarray) -> dict[str, np.ndarray]:
    """The examples ``indices`` of a source (a dict of arrays or a sequence of example dicts)."""
    indices = np.asarray(indices)
    if isinstance(source, Mapping):
        return {k: np.asarray(v)[indices] for k, v in source.items()}
    return _stack([source[int(i)] for i in indices])


def _stack(examples: Sequence[Any]) -> Any:
    first = examples[0]
    if isinstance(first, Mapping):
        return {k: _stack([e[k] for e in examples]) for k in first}
    return np.stack([np.asarray(e) for e in examples])


def fetch(tree: PyTree) -> PyTree:
    """Host NumPy copies of a pytree of global arrays, the same on every process.

    A replicated array is read from a local device; a sharded one is gathered from every
    process (a collective: every process must call this at the same point).
    """

    def get(x):
        if not isinstance(x, jax.Array):
            return x
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        if x.is_fully_addressable:
            return np.asarray(jax.device_get(x))
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(get, tree)
