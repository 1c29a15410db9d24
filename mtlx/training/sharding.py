"""Meshes for data-parallel multi-task training, and the task axis of the Jacobian over devices.

A mesh has a ``"data"`` axis (the batch is split over it; parameters and optimizer state are
replicated) and optionally a ``"task"`` axis (the rows of the per-task Jacobian are split over it,
so each device holds ``T / n`` rows and the ``T x T`` Gramian is reduced across devices). On a CPU
machine, ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (set before JAX starts) gives
eight devices to test with.

Across processes (:mod:`mtlx.training.distributed`), ``jax.devices()`` lists every process's
devices: the mesh is global, ordered by process, so that a process's devices are neighbours along
the data axis (and, when the task axis is longer than a process's devices, the task axis spans
processes). :func:`replicate` then builds each array from the process's own copy, and
:func:`shard_process_batch` assembles a batch from each process's rows.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mtlx.jacobian import Jacobian, StackedJacobian
from mtlx.training import distributed

DATA_AXIS = "data"
TASK_AXIS = "task"

PyTree = Any


def make_mesh(num_devices: int | None = None, *, task: int = 1) -> Mesh:
    """A ``(data, task)`` mesh over the first ``num_devices`` devices.

    Args:
      num_devices: devices to use (default: all).
      task: size of the ``"task"`` axis (1: pure data parallelism); it must divide
        ``num_devices``. The ``"data"`` axis gets the rest.

    Returns:
      A :class:`jax.sharding.Mesh` with axes ``("data", "task")``.

    Raises:
      ValueError: more devices than there are, a task axis that does not divide them, or, in a
        multi-process run, a mesh that leaves some devices out (every process must take part).
    """
    devices = jax.devices()
    n = len(devices) if num_devices is None else int(num_devices)
    if not 1 <= n <= len(devices):
        raise ValueError(
            f"asked for {n} devices; {len(devices)} available ({jax.default_backend()}). On CPU, "
            "set XLA_FLAGS=--xla_force_host_platform_device_count=N before importing JAX."
        )
    if jax.process_count() > 1:
        if n != len(devices):
            raise ValueError(
                f"a multi-process mesh spans every process's devices: asked for {n} of the "
                f"{len(devices)} devices of {jax.process_count()} processes; use num_devices="
                f"{len(devices)} (or None)."
            )
        devices = sorted(devices, key=lambda d: (d.process_index, d.id))
    if task < 1 or n % task:
        raise ValueError(f"the task axis ({task}) must divide the number of devices ({n}).")
    grid = np.asarray(devices[:n]).reshape(n // task, task)
    return Mesh(grid, (DATA_AXIS, TASK_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Puts every array of ``tree`` on every device of ``mesh``.

    In a multi-process run each process gives its own copy (the same on every process: the
    model and optimizer are initialised from the same seed) for its own devices.
    """
    sharding = replicated(mesh)
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)

    def put(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = jax.make_array_from_process_local_data(
                sharding, np.asarray(jax.random.key_data(x))
            )
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
        return jax.make_array_from_process_local_data(sharding, np.asarray(x))

    return jax.tree.map(put, tree)


def replicate_constraint(tree: PyTree, mesh: Mesh) -> PyTree:
    """Inside ``jit``: keeps ``tree`` replicated (the state stays whole on every device)."""
    return jax.lax.with_sharding_constraint(tree, replicated(mesh))


def shard_batch(batch: PyTree, mesh: Mesh, *, batch_axis: int = 0) -> PyTree:
    """Splits every array's ``batch_axis`` over the mesh's ``"data"`` axis.

    Raises:
      ValueError: a batch that does not split evenly over the data devices.
    """
    data_devices = mesh.shape[DATA_AXIS]

    def put(x):
        x = np.asarray(x)
        if x.shape[batch_axis] % data_devices:
            raise ValueError(
                f"a batch of {x.shape[batch_axis]} examples does not split evenly over "
                f"{data_devices} data-parallel devices; use a batch size divisible by {data_devices}."
            )
        spec = [None] * x.ndim
        spec[batch_axis] = DATA_AXIS
        return jax.device_put(x, NamedSharding(mesh, PartitionSpec(*spec)))

    return jax.tree.map(put, batch)


def batch_sharding(mesh: Mesh, ndim: int, batch_axis: int = 0) -> NamedSharding:
    """Axis ``batch_axis`` of an ``ndim``-dimensional array split over ``"data"``."""
    spec = [None] * ndim
    spec[batch_axis] = DATA_AXIS
    return NamedSharding(mesh, PartitionSpec(*spec))


def process_batch_rows(mesh: Mesh, global_rows: int, *, batch_axis: int = 0) -> tuple[int, int]:
    """The rows ``[start, stop)`` of a global batch of ``global_rows`` that this process loads.

    Raises:
      ValueError: a batch that does not split evenly over the data devices.
    """
    data_devices = mesh.shape[DATA_AXIS]
    if global_rows % data_devices:
        raise ValueError(
            f"a batch of {global_rows} examples does not split evenly over {data_devices} "
            f"data-parallel devices; use a batch size divisible by {data_devices}."
        )
    shape = [1] * (batch_axis + 1)
    shape[batch_axis] = global_rows
    return distributed.process_rows(batch_sharding(mesh, len(shape), batch_axis), shape, batch_axis)


def shard_process_batch(
    local: PyTree, mesh: Mesh, global_rows: int, *, batch_axis: int = 0
) -> dict[str, jax.Array]:
    """A global batch split over ``"data"`` from this process's rows of it
    (:func:`process_batch_rows`), e.g. in a multi-process run."""
    return distributed.global_batch(
        local, lambda ndim: batch_sharding(mesh, ndim, batch_axis), global_rows, batch_axis
    )


def shard_task_axis(jac: Jacobian, mesh: Mesh) -> StackedJacobian:
    """Inside ``jit``: the Jacobian's rows, their leading task axis split over ``"task"``.

    The rows are materialised (T backward passes, batched by ``jax.vmap``); each device computes
    and keeps its own tasks' rows, and Gramian / combination reduce over the task axis.
    """
    spec = NamedSharding(mesh, PartitionSpec(TASK_AXIS))
    rows = jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, spec), jac.rows())
    return StackedJacobian(rows, jac.shared_mask)
