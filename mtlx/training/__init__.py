"""Training multi-task models with any mtlx method (DESIGN.md section 5).

* :func:`train` runs a :class:`TrainConfig` end to end (the CLI: ``python -m mtlx.train``);
* :func:`make_train_step` is the jitted step (lazy Jacobian, any optax chain, ``lax.scan``);
* :mod:`~mtlx.training.losses` and :mod:`~mtlx.training.metrics`: per-task losses ``(T,)``,
  metrics and Δm; :class:`Checkpointer`: orbax checkpoints that resume bit-exactly;
  :mod:`~mtlx.training.sharding`: data-parallel meshes and the Jacobian's task axis over devices.

This package needs the ``train`` extra (flax, orbax-checkpoint, tqdm).
"""

from mtlx.training.checkpoint import Checkpointer
from mtlx.training.config import TrainConfig, make_method, make_model, make_optimizer, make_tx
from mtlx.training.datasets import Dataset
from mtlx.training.loop import NonFiniteLossError, RunResult, evaluate, train
from mtlx.training.losses import task_losses
from mtlx.training.metrics import delta_m, finalize, metric_stats
from mtlx.training.sharding import make_mesh, shard_batch
from mtlx.training.step import TrainState, TrainStep, make_eval_step, make_train_step
from mtlx.training.tasks import Task, classification_tasks

__all__ = [
    "Checkpointer",
    "Dataset",
    "NonFiniteLossError",
    "RunResult",
    "Task",
    "TrainConfig",
    "TrainState",
    "TrainStep",
    "classification_tasks",
    "delta_m",
    "evaluate",
    "finalize",
    "make_eval_step",
    "make_mesh",
    "make_method",
    "make_model",
    "make_optimizer",
    "make_train_step",
    "make_tx",
    "metric_stats",
    "shard_batch",
    "task_losses",
    "train",
]
