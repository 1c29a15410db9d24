"""Training multi-task models with any mtlx method.

* :func:`train` runs a :class:`TrainConfig` end to end (the CLI: ``python -m mtlx.train``), with an
  optional caller-built model, optax chain and per-step ``observe`` hook; it returns a
  :class:`RunResult` (metrics, Δm, the final state, the model's graph, the observations);
* :func:`make_train_step` is the jitted step (lazy Jacobian, any optax chain, ``lax.scan``); an
  ``observe(ctx: StepContext)`` function returns per-step observations stacked over the scan;
* task kinds (:mod:`~mtlx.training.kinds`: :class:`Classification`, :class:`Segmentation`,
  :class:`Depth`, :class:`Normal`, :class:`Regression`) hold each kind's loss, metric statistics,
  metrics and their directions; :class:`Task` takes a kind object or its name;
* datasets come by name from the registry of :mod:`mtlx.data` (:func:`datasets.load`);
* :func:`delta_m` against :func:`single_task_baselines` (each task trained alone);
* :func:`train_sweep` trains K models at once that differ in a method hyperparameter (the
  scalarization grid, a temperature sweep, the T single-task runs); :func:`run_study` runs labelled
  configs over seeds and reports mean ± std and paired differences with confidence intervals;
  :class:`Checkpointer`: orbax checkpoints that resume bit-exactly; :mod:`~mtlx.training.sharding`:
  data-parallel meshes and the Jacobian's task axis over devices; :mod:`~mtlx.training.distributed`:
  one run over several processes or hosts (``jax.distributed``);
* Flax NNX's stateful route: :func:`model_value_and_jacobian` (the Jacobian of an ``nnx.Module``,
  its BatchNorm statistics updated in place) and :class:`MultiTaskOptimizer` (an
  ``nnx.Optimizer`` that takes the Jacobian).

This package needs the ``train`` extra (flax, orbax-checkpoint, tqdm).
"""

from mtlx.data import Dataset, TaskSpec, register_dataset
from mtlx.training import datasets, distributed
from mtlx.training.baselines import load_baselines, save_baselines, single_task_baselines
from mtlx.training.checkpoint import Checkpointer
from mtlx.training.config import TrainConfig, make_method, make_model, make_optimizer, make_tx
from mtlx.training.functional import FunctionalModel
from mtlx.training.kinds import (
    Classification,
    Depth,
    Normal,
    Regression,
    Segmentation,
    TaskKind,
    get_kind,
    kind_names,
    register_kind,
)
from mtlx.training.loop import NonFiniteLossError, RunResult, evaluate, train
from mtlx.training.losses import per_example_losses, task_losses
from mtlx.training.metrics import DELTA_M_CONVENTION, delta_m, finalize, metric_stats
from mtlx.training.nnx_optimizer import MultiTaskOptimizer, model_value_and_jacobian
from mtlx.training.sharding import make_mesh, shard_batch
from mtlx.training.step import (
    StepContext,
    TrainState,
    TrainStep,
    make_eval_step,
    make_train_step,
)
from mtlx.training.study import PairedDifference, Study, paired_difference, run_study
from mtlx.training.sweep import SweepResult, train_sweep
from mtlx.training.tasks import Task, as_task, classification_tasks

__all__ = [
    "PairedDifference",
    "Study",
    "SweepResult",
    "paired_difference",
    "run_study",
    "train_sweep",
    "DELTA_M_CONVENTION",
    "Checkpointer",
    "Classification",
    "Dataset",
    "Depth",
    "FunctionalModel",
    "MultiTaskOptimizer",
    "NonFiniteLossError",
    "Normal",
    "Regression",
    "RunResult",
    "Segmentation",
    "StepContext",
    "Task",
    "TaskKind",
    "TaskSpec",
    "TrainConfig",
    "TrainState",
    "TrainStep",
    "as_task",
    "classification_tasks",
    "datasets",
    "delta_m",
    "distributed",
    "evaluate",
    "finalize",
    "get_kind",
    "kind_names",
    "load_baselines",
    "make_eval_step",
    "make_mesh",
    "make_method",
    "make_model",
    "make_optimizer",
    "make_train_step",
    "make_tx",
    "metric_stats",
    "model_value_and_jacobian",
    "per_example_losses",
    "register_dataset",
    "register_kind",
    "save_baselines",
    "shard_batch",
    "single_task_baselines",
    "task_losses",
    "train",
]
