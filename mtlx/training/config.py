"""A training run's configuration, and how its names become a model, a method and an optimizer.

Names are resolved on the public modules, so a new method, model or optax optimizer needs no
registry entry: ``config.method = "pcgrad"`` is ``mtlx.pcgrad(**config.method_kwargs)``,
``config.model = "lenet_hps"`` is ``mtlx.models.lenet_hps(...)`` and ``config.optimizer =
"adam"`` is ``optax.adam(config.learning_rate, **config.optimizer_kwargs)``.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import optax
from flax import nnx

import mtlx
from mtlx import models


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run (the defaults: Multi-Digits, an MLP, EW, Adam).

    Attributes:
      dataset: a registered dataset (:func:`mtlx.data.dataset_names`: ``"digits"``, ``"yeast"``,
        ``"multi_mnist"``, ``"celeba"``, ``"cifar10_corrupted"``, ``"nyuv2"``, ``"cityscapes"``,
        ``"synthetic"``).
      dataset_kwargs: keyword arguments of the dataset loader.
      model: a factory in :mod:`mtlx.models`; ``num_tasks``, the input size and the tasks'
        output size are passed when it takes them (see :func:`make_model`).
      model_kwargs: its other keyword arguments.
      method: an mtlx method factory name (``"ew"``, ``"pcgrad"``, ``"uw_so"``; ``"UW-SO"`` works).
      method_kwargs: its keyword arguments; ``num_tasks`` is passed when it takes one.
      optimizer: an optax optimizer name, called as ``optax.<name>(learning_rate, **kwargs)``
        (``"adam"``, ``"sgd"`` with ``momentum``, ``"signum"``, ``"sign_sgd"``, ``"adamw"``, ...).
      learning_rate: the optimizer's learning rate.
      optimizer_kwargs: its other keyword arguments.
      batch_size: training examples per step (divisible by the data-parallel devices).
      eval_batch_size: evaluation examples per batch.
      num_steps: optimizer steps in the run.
      steps_per_call: steps run per call to the device (one host sync); ``num_steps`` must be a
        multiple of it.
      scan: run a call's steps as one ``jax.lax.scan`` (``False``: as that many calls of the
        jitted single step; faster for convolutional models on CPU, see
        :func:`~mtlx.training.make_train_step`).
      eval_every: evaluate every this many steps (0: only at the end).
      log_every: write a JSON-lines record every this many steps.
      checkpoint_every: save a checkpoint every this many steps (0: none; only with a
        ``workdir``, under ``workdir/checkpoints``).
      workdir: where logs (``log.jsonl``) and checkpoints go (``None``: nowhere).
      resume: continue from the newest checkpoint in ``workdir`` when there is one (written by
        the same configuration up to its length, logging and saving: another configuration is
        refused). ``False`` starts over and moves earlier checkpoints to
        ``checkpoints.replaced-N`` (never deletes them).
      seed: seeds the model initialisation, the data order and the method's PRNG key.
      num_devices: devices of the mesh (``None``: no mesh, the default device; in a
        multi-process run, see :mod:`mtlx.training.distributed`, every process's devices).
      task_devices: devices along the mesh's task axis (Jacobian rows split over them); the data
        axis gets ``num_devices / task_devices``, which must divide ``batch_size``. When the task
        axis is longer than a process's devices, it spans processes.
      chunk_size: Jacobian rows live at once (see :func:`mtlx.value_and_jacobian`).
      baselines: single-task results ``{task: {metric: value}}`` for Δm (``None``: no Δm;
        :func:`mtlx.training.single_task_baselines` trains them, and the CLI does so by default).
      progress: show a progress bar.
      random_row_weights: a distribution of :func:`mtlx.rlw_weights` (``"normal"``, ...): random
        weights on the task losses chained before the method (:func:`mtlx.random_row_weights`,
        Lin et al.'s "RW + method"); ``None``: none.
      conflict_monitor_every: with N > 0, :func:`mtlx.conflict_monitor` heads the chain and
        records per-layer gradient-conflict statistics on every N-th update (read them with
        :func:`mtlx.analysis.layer_conflict_summary` of the run's ``state.opt_state``). It
        materialises the Jacobian's rows on those updates (T backward passes; the method that
        follows reuses them with ``1``). ``0``: no monitor.
      skip_nonfinite: wrap the chain in :func:`mtlx.skip_nonfinite`: a step whose losses or
        update are not finite moves nothing and leaves every state as it was; the run counts
        the skips (``skipped_updates`` in the last record of ``RunResult.history``) instead of stopping with
        :class:`~mtlx.training.NonFiniteLossError`.
    """

    dataset: str = "digits"
    dataset_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    model: str = "mlp_hps"
    model_kwargs: dict[str, Any] = dataclasses.field(default_factory=lambda: {"hidden": (256, 256)})
    method: str = "ew"
    method_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    optimizer_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    batch_size: int = 64
    eval_batch_size: int = 512
    num_steps: int = 1500
    steps_per_call: int = 50
    scan: bool = True
    eval_every: int = 0
    log_every: int = 100
    checkpoint_every: int = 0
    workdir: str | None = None
    resume: bool = True
    seed: int = 0
    num_devices: int | None = None
    task_devices: int = 1
    chunk_size: int | None = None
    baselines: dict[str, dict[str, float]] | None = None
    progress: bool = True
    random_row_weights: str | None = None
    conflict_monitor_every: int = 0
    skip_nonfinite: bool = False

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def validate(self) -> TrainConfig:
        """Checks the settings; returns ``self``.

        Everything that can be checked without loading data is checked here, so that a bad
        setting fails at once, with the setting's name, rather than after the data has loaded.

        Raises:
          ValueError: a non-positive size or count, a negative interval, a learning rate that is
            not a positive finite number, an unknown method or random-weight distribution,
            ``num_steps`` not a multiple of ``steps_per_call``, or a mesh whose task axis does
            not divide ``num_devices`` or whose data axis does not divide ``batch_size``.
        """
        for name in (
            "batch_size",
            "eval_batch_size",
            "num_steps",
            "steps_per_call",
            "task_devices",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}.")
        for name in (
            "eval_every",
            "log_every",
            "checkpoint_every",
            "seed",
            "conflict_monitor_every",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer; got {value!r}.")
        for name in ("num_devices", "chunk_size"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1
            ):
                raise ValueError(f"{name} must be a positive integer or None; got {value!r}.")
        if self.num_devices is not None:
            if self.num_devices % self.task_devices:
                raise ValueError(
                    f"task_devices ({self.task_devices}) must divide num_devices "
                    f"({self.num_devices}): the mesh is num_devices / task_devices data devices "
                    "by task_devices task devices."
                )
            data_devices = self.num_devices // self.task_devices
            if self.batch_size % data_devices:
                raise ValueError(
                    f"batch_size ({self.batch_size}) must be divisible by the data-parallel "
                    f"devices, num_devices / task_devices = {data_devices}: use batch_size="
                    f"{-(-self.batch_size // data_devices) * data_devices}, or another "
                    "task_devices."
                )
        rate = self.learning_rate
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate < math.inf:
            raise ValueError(f"learning_rate must be a positive finite number; got {rate!r}.")
        if self.method is not None and isinstance(self.method, str):
            resolve_method_name(self.method)  # an unknown name lists the known ones
        if self.random_row_weights is not None:
            from mtlx.weighting._rlw import DISTRIBUTIONS

            if self.random_row_weights not in DISTRIBUTIONS:
                raise ValueError(
                    f"random_row_weights must be None or one of {sorted(DISTRIBUTIONS)}; got "
                    f"{self.random_row_weights!r}."
                )
        if self.num_steps % self.steps_per_call:
            raise ValueError(
                f"num_steps ({self.num_steps}) must be a multiple of steps_per_call "
                f"({self.steps_per_call}): every jitted call runs the same number of steps."
            )
        return self


def _with_num_tasks(factory: Callable[..., Any], kwargs: Mapping[str, Any], num_tasks: int):
    kwargs = dict(kwargs)
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        parameters = {}
    if "num_tasks" in parameters and "num_tasks" not in kwargs:
        kwargs["num_tasks"] = num_tasks
    return kwargs


# Transforms on mtlx that are not a method on their own: the builder of a Weighting value,
# random row weights, which go before a method (TrainConfig.random_row_weights), and the
# non-finite guard, which wraps a chain (TrainConfig.skip_nonfinite). AdaTask is a whole
# optimizer (TrainConfig.optimizer = "adatask"), not a weighting.
_NOT_METHODS = frozenset(
    {"as_transform", "random_row_weights", "adatask", "scale_by_adatask", "skip_nonfinite"}
)


def method_names() -> list[str]:
    """The weighting-method factories available on the ``mtlx`` module."""
    from mtlx import weighting

    return sorted(
        n
        for n in weighting.__all__
        if n not in _NOT_METHODS and _is_method_factory(getattr(weighting, n))
    )


def factory_parameters(factory: Callable[..., Any]) -> list[str]:
    """The argument names of a factory (``[]`` when it has no signature)."""
    try:
        return list(inspect.signature(factory).parameters)
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return []


def _is_method_factory(obj: Any) -> bool:
    # Factories are annotated to return an optax transformation; helpers (``*_weights``,
    # ``simplex_grid``, ...) are not.
    if not inspect.isfunction(obj):
        return False
    annotation = inspect.signature(obj).return_annotation
    return "Transformation" in (
        annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    )


def canonical_method_name(name: str) -> str:
    """``"UW-SO"`` -> ``"uw_so"``: method names are snake_case factories on ``mtlx``."""
    return name.strip().lower().replace("-", "_")


def resolve_method_name(name: str) -> str:
    """The canonical name of method ``name``; a ``ValueError`` listing the methods if unknown."""
    canonical = canonical_method_name(name)
    if canonical not in method_names():
        raise ValueError(
            f"unknown method {name!r}: mtlx has no weighting method {canonical!r}. "
            f"Available: {', '.join(method_names())}."
        )
    return canonical


def make_method(name: str, num_tasks: int, **kwargs: Any) -> optax.GradientTransformation:
    """The mtlx method ``name`` (e.g. ``"pcgrad"``, ``"UW-SO"``) with ``kwargs``.

    ``num_tasks`` is passed when the factory takes it and ``kwargs`` does not give it.

    Raises:
      ValueError: no such method on ``mtlx`` (the message lists those that exist).
    """
    factory = getattr(mtlx, resolve_method_name(name))
    return factory(**_with_num_tasks(factory, kwargs, num_tasks))


def make_optimizer(name: str, learning_rate: float, **kwargs: Any) -> optax.GradientTransformation:
    """``optax.<name>(learning_rate, **kwargs)``, e.g. ``make_optimizer("sgd", 0.1, momentum=0.9)``.

    Raises:
      ValueError: optax has no optimizer ``name``, or it does not take ``kwargs`` (the message
        names the arguments it takes).
    """
    factory = getattr(optax, name, None) if not name.startswith("_") else None
    if factory is None or not callable(factory) or isinstance(factory, type):
        raise ValueError(
            f"unknown optimizer {name!r}: optax has no {name!r} "
            "(try adam, sgd, signum, sign_sgd, adamw, lion)."
        )
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        parameters = {}
    unknown = [k for k in kwargs if parameters and k not in parameters]
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        raise ValueError(
            f"optax.{name} takes no argument {unknown}; its arguments: "
            f"{', '.join(p for p in parameters if p != 'learning_rate')}."
        )
    return factory(learning_rate, **kwargs)


def make_model(
    name: str,
    num_tasks: int,
    seed: int,
    input_shape: tuple[int, ...] | None = None,
    *,
    output_sizes: Mapping[str, int | None] | None = None,
    **kwargs: Any,
) -> nnx.Module:
    """``mtlx.models.<name>(..., rngs=nnx.Rngs(seed))``.

    ``num_tasks``, and from the shape of one input example ``input_shape``, ``in_features`` (its
    size) and ``in_channels`` (its last axis), are passed when the factory takes them and
    ``kwargs`` does not give them. With ``output_sizes`` (``{task name: output size}``, e.g.
    ``{t.name: t.output_size for t in tasks}``), the tasks' output sizes are passed too: as
    ``out_features`` / ``num_classes`` (one int when all tasks share one size, else a tuple in
    task order), and as ``tasks=output_sizes`` to a factory taking such a mapping (SegNet).
    """
    factory = getattr(models, name, None)
    if factory is None or not callable(factory) or name.startswith("_"):
        raise ValueError(
            f"unknown model {name!r}; mtlx.models has: "
            f"{', '.join(n for n in models.__all__ if n.islower() and n != 'is_shared')}."
        )
    kwargs = _with_num_tasks(factory, kwargs, num_tasks)
    parameters = inspect.signature(factory).parameters
    if input_shape is not None:
        if "in_features" in parameters:
            kwargs.setdefault("in_features", int(math.prod(input_shape)))
        if "in_channels" in parameters and len(input_shape) == 3:
            kwargs.setdefault("in_channels", int(input_shape[-1]))
    if output_sizes:
        sizes = dict(output_sizes)
        if None not in sizes.values():
            # One size for all heads, or one per task (mlp_hps, lenet_hps: e.g. two 10-way
            # classifiers and a scalar regression share stacked heads of the largest size).
            size = (
                next(iter(sizes.values()))
                if len(set(sizes.values())) == 1
                else tuple(sizes.values())
            )
            for key in ("out_features", "num_classes"):
                if key in parameters:
                    kwargs.setdefault(key, size)
            if "tasks" in parameters and "tasks" not in kwargs:
                kwargs["tasks"] = sizes
    return factory(**kwargs, rngs=nnx.Rngs(seed))


def method_kwargs(config: TrainConfig, num_tasks: int) -> dict[str, Any]:
    """The method's arguments: ``config.method_kwargs``, ``num_tasks`` and ``seed=config.seed``
    where the factory takes them and the config does not give them."""
    factory = getattr(mtlx, resolve_method_name(config.method))
    kwargs = _with_num_tasks(factory, config.method_kwargs, num_tasks)
    if "seed" in factory_parameters(factory):
        kwargs.setdefault("seed", config.seed)
    return kwargs


def make_tx(
    config: TrainConfig,
    num_tasks: int,
    *,
    method: optax.GradientTransformation | None = None,
    optimizer: optax.GradientTransformation | None = None,
) -> optax.GradientTransformation:
    """``optax.chain([random_row_weights,] method, optimizer)`` from the config.

    The method's seed defaults to ``config.seed``; with ``config.random_row_weights`` the rows are
    scaled by random weights of that distribution before the method (Lin et al.'s "RW + method").
    ``method`` and ``optimizer`` replace the ones the config names (e.g. the same factories through
    ``optax.inject_hyperparams``, as :func:`mtlx.training.train_sweep` builds them); with
    ``optimizer="adatask"`` the chain is the optimizer alone.
    """
    if config.optimizer == "adatask":
        # AdaTask is a complete optimizer over the Jacobian (per-task Adam moments): the chain is
        # mtlx.adatask alone, and the method may only be the plain sum it replaces.
        if canonical_method_name(config.method) not in ("ew", "mean"):
            raise ValueError(
                "optimizer='adatask' replaces both the weighting method and the optimizer (AdaTask "
                "keeps per-task Adam moments of the Jacobian's rows): set method='ew' (or 'mean'); "
                f"got method={config.method!r}."
            )
        if config.random_row_weights is not None:
            raise ValueError(
                "random_row_weights has no effect before AdaTask (its per-task moments undo any "
                "per-task scale): leave random_row_weights=None with optimizer='adatask'."
            )
        if optimizer is None:
            optimizer = mtlx.adatask(
                config.learning_rate, num_tasks=num_tasks, **config.optimizer_kwargs
            )
        return _guarded(config, _with_monitor(config, num_tasks, optimizer))
    if method is None:
        factory = getattr(mtlx, resolve_method_name(config.method))
        method = factory(**method_kwargs(config, num_tasks))
    if optimizer is None:
        optimizer = make_optimizer(
            config.optimizer, config.learning_rate, **config.optimizer_kwargs
        )
    chain = [method, optimizer]
    if config.random_row_weights is not None:
        # Its own stream: the method's seed is config.seed too, and its draws must not coincide.
        row_seed = config.seed + 7919
        chain.insert(0, mtlx.random_row_weights(config.random_row_weights, seed=row_seed))
    return _guarded(config, _with_monitor(config, num_tasks, optax.chain(*chain)))


def _guarded(config: TrainConfig, tx: optax.GradientTransformation) -> optax.GradientTransformation:
    """``tx`` inside the non-finite guard when the config asks for it (around everything, so that
    no state takes a non-finite step)."""
    return mtlx.skip_nonfinite(tx) if config.skip_nonfinite else tx


def _with_monitor(
    config: TrainConfig, num_tasks: int, tx: optax.GradientTransformation
) -> optax.GradientTransformation:
    """``tx`` headed by the conflict monitor when the config asks for one (it must see the raw
    Jacobian: before random row weights, the method, AdaTask)."""
    if not config.conflict_monitor_every:
        return tx
    from mtlx.analysis import conflict_monitor

    monitor = conflict_monitor(every=config.conflict_monitor_every, num_tasks=num_tasks)
    return optax.chain(monitor, tx)
