"""Checkpoints that resume bit-exactly (the only module that imports orbax).

A checkpoint holds the :class:`~mtlx.training.step.TrainState` (parameters, model state with its
dropout PRNG keys, the optax state with the mtlx method's PRNG key and statistics, the step) and
the data position (``mtlx.data.Batches.get_state()``, e.g. ``{"step": 1200}``) plus free-form JSON metadata (the run's configuration).
Typed PRNG keys cannot be serialised: they are stored as their raw ``uint32`` key data and wrapped
again on restore with the implementation of the corresponding key in the target state.

In a multi-process run (:mod:`mtlx.training.distributed`) every process constructs the same
:class:`Checkpointer` and calls each method at the same point: orbax writes a checkpoint from all
processes together (each its own shards, process 0 the metadata and the commit) and every
process restores the whole state onto the global mesh of ``like``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from mtlx.training import distributed

PyTree = Any


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _unwrap_keys(tree: PyTree) -> PyTree:
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _rewrap_keys(tree: PyTree, like: PyTree) -> PyTree:
    def rewrap(x, ref):
        if _is_key(ref):
            return jax.random.wrap_key_data(x, impl=jax.random.key_impl(ref))
        return x

    return jax.tree.map(rewrap, tree, like)


def _abstract(tree: PyTree) -> PyTree:
    def spec(x):
        sharding = getattr(x, "sharding", None)
        return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)

    return jax.tree.map(spec, tree)


class Checkpointer:
    """Saves and restores training state under ``directory/<step>/``.

    Args:
      directory: where the checkpoints go (created if needed; made absolute).
      max_to_keep: how many recent checkpoints to keep (``None``: all).

    Example::

      ckpt = Checkpointer(workdir)
      ckpt.save(state, position, metadata={"method": "pcgrad"})
      state, position, metadata = ckpt.restore(like=step_fns.init())
    """

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int | None = 3):
        self.directory = os.path.abspath(os.fspath(directory))
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def latest_step(self) -> int | None:
        """The step of the newest checkpoint, or ``None`` when there is none."""
        return self._manager.latest_step()

    def save(
        self,
        state: Any,
        position: dict[str, Any],
        *,
        metadata: dict[str, Any] | None = None,
        wait: bool = True,
    ) -> int:
        """Writes ``state`` and ``position`` as the checkpoint of ``int(state.step)``."""
        step = int(jax.device_get(state.step))
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(_unwrap_keys(state)),
                position=ocp.args.JsonSave({k: int(v) for k, v in position.items()}),
                metadata=ocp.args.JsonSave(dict(metadata or {})),
            ),
            force=True,
        )
        if wait:
            self._manager.wait_until_finished()
        return step

    def restore(
        self, like: Any, step: int | None = None
    ) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """The state, data position and metadata of checkpoint ``step`` (default: the newest).

        Args:
          like: a state with the target structure, dtypes and shardings (e.g. a fresh
            ``init()``); its PRNG keys give the key implementations.
          step: which checkpoint; ``None`` for the newest.

        Raises:
          FileNotFoundError: no checkpoint in the directory.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}.")
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(_abstract(_unwrap_keys(like))),
                position=ocp.args.JsonRestore(),
                metadata=ocp.args.JsonRestore(),
            ),
        )
        state = _rewrap_keys(restored["state"], like)
        return state, dict(restored["position"]), dict(restored["metadata"] or {})

    def restore_arrays(self, step: int | None = None) -> tuple[PyTree, dict[str, Any]]:
        """The saved state of checkpoint ``step`` (default: the newest) as NumPy arrays, and its
        data position, without a target state: to inspect or compare checkpoints on a machine
        without the run's devices or mesh (PRNG keys come back as their raw ``uint32`` data).

        Raises:
          FileNotFoundError: no checkpoint in the directory.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}.")
        path = os.path.join(self.directory, str(step), "state")
        checkpointer = ocp.PyTreeCheckpointer()
        metadata = checkpointer.metadata(path)
        tree = getattr(metadata, "item_metadata", metadata)
        tree = getattr(tree, "tree", tree)
        as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        state = checkpointer.restore(path, restore_args=as_numpy)
        position = self._manager.restore(
            step, args=ocp.args.Composite(position=ocp.args.JsonRestore())
        )["position"]
        return state, dict(position)

    def all_steps(self) -> list[int]:
        """The steps of every checkpoint in the directory, oldest first."""
        return sorted(self._manager.all_steps())

    def restore_newest_readable(
        self,
        like: Any,
        *,
        check: Callable[[dict[str, Any]], None] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> tuple[Any, dict[str, Any], dict[str, Any]] | None:
        """The newest checkpoint that reads back whole, skipping damaged newer ones.

        A checkpoint whose files were truncated or corrupted (a crash while the disk filled, a
        copy cut short) raises inside orbax; this tries the next older one instead and says so
        through ``log``. ``check(metadata)`` runs before each state is restored (e.g. the
        configuration comparison of a resume); its errors are not skipped but raised.

        Returns:
          ``(state, position, metadata)`` as :meth:`restore`, or ``None`` when there is no
          checkpoint.

        Raises:
          RuntimeError: there are checkpoints but none reads back (each one's error is listed).
        """
        steps = self.all_steps()
        failures = []
        for step in reversed(steps):
            try:
                metadata = self.metadata(step)
            except Exception as e:  # any damage orbax reports: try an older checkpoint
                failures.append(f"step {step}: {type(e).__name__}: {str(e)[:200]}")
                self._note(log, step, e)
                continue
            if check is not None:
                check(metadata)
            try:
                return self.restore(like, step)
            except Exception as e:
                failures.append(f"step {step}: {type(e).__name__}: {str(e)[:200]}")
                self._note(log, step, e)
        if steps:
            raise RuntimeError(
                f"no checkpoint in {self.directory} reads back: " + "; ".join(failures)
            )
        return None

    def _note(self, log: Callable[[str], None] | None, step: int, error: Exception) -> None:
        """Moves damaged checkpoint ``step`` to ``<directory>.damaged/<step>`` (kept for a look,
        out of the way of the run that saves that step again) and says so."""
        damaged = f"{self.directory}.damaged"
        target = os.path.join(damaged, str(step))
        n = 1
        while os.path.exists(target):
            target = os.path.join(damaged, f"{step}.{n}")
            n += 1
        if jax.process_index() == 0:  # one process moves it; the others wait for the move
            os.makedirs(damaged, exist_ok=True)
            os.rename(os.path.join(self.directory, str(step)), target)
        distributed.sync(f"mtlx.checkpoint.damaged.{step}")
        self._manager.reload()
        if log is not None:
            log(
                f"checkpoint {step} in {self.directory} is damaged ({type(error).__name__}); moved "
                f"to {target}, trying the one before it"
            )

    def metadata(self, step: int | None = None) -> dict[str, Any]:
        """The metadata of checkpoint ``step`` (default: the newest), without the state: what a
        resume compares before restoring a state whose structure may have changed."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}.")
        restored = self._manager.restore(
            step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore())
        )
        return dict(restored["metadata"] or {})

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> Checkpointer:  # noqa: PYI034 - final class
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
