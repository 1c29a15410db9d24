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

import optax
from flax import nnx

import mtlx
from mtlx import models


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run (the defaults: Multi-Digits, an MLP, EW, Adam).

    Attributes:
      dataset: a name known to :mod:`mtlx.training.datasets` (``"digits"``, ``"multi_mnist"``,
        ``"celeba"``, ``"nyuv2"``, ``"cityscapes"``, ``"synthetic"``).
      dataset_kwargs: keyword arguments of the dataset loader.
      model: a factory in :mod:`mtlx.models`; ``num_tasks`` is passed when it takes one.
      model_kwargs: its other keyword arguments.
      method: an mtlx method factory name (``"ew"``, ``"pcgrad"``, ``"uw_so"``; ``"UW-SO"`` works).
      method_kwargs: its keyword arguments; ``num_tasks`` is passed when it takes one.
      optimizer: an optax optimizer name, called as ``optax.<name>(learning_rate, **kwargs)``.
      learning_rate: the optimizer's learning rate.
      optimizer_kwargs: its other keyword arguments.
      batch_size: training examples per step (divisible by the data-parallel devices).
      eval_batch_size: evaluation examples per batch.
      num_steps: optimizer steps in the run.
      steps_per_call: steps scanned in one jitted call; ``num_steps`` must be a multiple of it.
      eval_every: evaluate every this many steps (0: only at the end).
      log_every: write a JSON-lines record every this many steps.
      checkpoint_every: save a checkpoint every this many steps (0: none; only with a
        ``workdir``, under ``workdir/checkpoints``).
      workdir: where logs (``log.jsonl``) and checkpoints go (``None``: nowhere).
      resume: continue from the newest checkpoint in ``workdir`` when there is one.
      seed: seeds the model initialisation, the data order and the method's PRNG key.
      num_devices: data-parallel devices (``None``: no mesh, the default device).
      task_devices: devices along the mesh's task axis (Jacobian rows split over them).
      chunk_size: Jacobian rows live at once (see :func:`mtlx.value_and_jacobian`).
      baselines: single-task results ``{task: {metric: value}}`` for Δm (``None``: no Δm).
      progress: show a progress bar.
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
    eval_every: int = 0
    log_every: int = 100
    checkpoint_every: int = 0
    workdir: str | None = None
    resume: bool = True
    seed: int = 0
    num_devices: int | None = None
    task_devices: int = 1
    chunk_size: int | None = None
    # Single-task baselines of the default run (the same MLP trained by ``scalarization`` with a
    # one-hot weight, 1500 steps, seed 0): Δm compares against them.
    baselines: dict[str, dict[str, float]] | None = dataclasses.field(
        default_factory=lambda: {"left": {"accuracy": 0.9755}, "right": {"accuracy": 0.9710}}
    )
    progress: bool = True

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def validate(self) -> TrainConfig:
        for name in ("batch_size", "eval_batch_size", "num_steps", "steps_per_call"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer; got {getattr(self, name)}.")
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


def method_names() -> list[str]:
    """The weighting-method factories available on the ``mtlx`` module."""
    from mtlx import weighting

    return sorted(n for n in weighting.__all__ if _is_method_factory(getattr(weighting, n)))


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
    """``optax.<name>(learning_rate, **kwargs)``, with a clear error for an unknown name."""
    factory = getattr(optax, name, None)
    if factory is None or not callable(factory):
        raise ValueError(
            f"unknown optimizer {name!r}: optax has no {name!r} (try adam, sgd, adamw)."
        )
    return factory(learning_rate, **kwargs)


def make_model(
    name: str,
    num_tasks: int,
    seed: int,
    input_shape: tuple[int, ...] | None = None,
    **kwargs: Any,
) -> nnx.Module:
    """``mtlx.models.<name>(..., rngs=nnx.Rngs(seed))``.

    ``num_tasks``, and from the shape of one input example ``input_shape``, ``in_features`` (its
    size) and ``in_channels`` (its last axis), are passed when the factory takes them and
    ``kwargs`` does not give them.
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
    return factory(**kwargs, rngs=nnx.Rngs(seed))


def make_tx(config: TrainConfig, num_tasks: int) -> optax.GradientTransformation:
    """``optax.chain(method, optimizer)`` from the config (the method's default seed: config.seed)."""
    if config.optimizer == "adatask":
        # AdaTask is a complete optimizer over the Jacobian (per-task Adam moments): the chain is
        # mtlx.adatask alone, and the method may only be the plain sum it replaces.
        if canonical_method_name(config.method) not in ("ew", "mean"):
            raise ValueError(
                "optimizer='adatask' replaces both the weighting method and the optimizer (AdaTask "
                "keeps per-task Adam moments of the Jacobian's rows): set method='ew' (or 'mean'); "
                f"got method={config.method!r}."
            )
        return mtlx.adatask(config.learning_rate, num_tasks=num_tasks, **config.optimizer_kwargs)
    method_kwargs = dict(config.method_kwargs)
    factory = getattr(mtlx, canonical_method_name(config.method), None)
    if factory is not None and "seed" in inspect.signature(factory).parameters:
        method_kwargs.setdefault("seed", config.seed)
    return optax.chain(
        make_method(config.method, num_tasks, **method_kwargs),
        make_optimizer(config.optimizer, config.learning_rate, **config.optimizer_kwargs),
    )
