"""Multi-task models in Flax NNX: hard parameter sharing (a shared encoder, per-task heads).

``model(x)`` returns a tuple of T task outputs. Head parameters live under the attribute
``heads``; identical heads are stacked (:class:`TaskHeads`: every leaf has a leading task axis, a
task-specific leaf for :func:`mtlx.value_and_jacobian`), and :func:`is_shared` is the
``shared=`` predicate on the model's parameter state::

  model = mtlx.models.lenet_hps(num_tasks=2, rngs=nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def loss_fn(params, batch):
      logits = nnx.merge(graphdef, params, rest)(batch["image"])
      return jnp.stack([cross_entropy(y, batch["labels"][:, t]) for t, y in enumerate(logits)])

  losses, jac = mtlx.value_and_jacobian(loss_fn, shared=mtlx.models.is_shared)(params, batch)

This package imports only flax, jax and numpy.
"""

from mtlx.models._hps import MultiTaskModel, PerTaskHeads, TaskHeads, is_shared
from mtlx.models._lenet import LeNetEncoder, LeNetHead, lenet_hps
from mtlx.models._mlp import MLP, mlp_hps
from mtlx.models._narrow_resnet import NarrowBlock, NarrowResNetEncoder, narrow_resnet_hps
from mtlx.models._resnet import BasicBlock, ResNet18Encoder, resnet18_hps
from mtlx.models._segnet import (
    NYUV2_TASKS,
    DenseHead,
    SegNetEncoder,
    max_pool_with_argmax,
    max_unpool,
    segnet_mtl,
)

__all__ = [
    "NYUV2_TASKS",
    "BasicBlock",
    "DenseHead",
    "LeNetEncoder",
    "LeNetHead",
    "MLP",
    "MultiTaskModel",
    "NarrowBlock",
    "NarrowResNetEncoder",
    "PerTaskHeads",
    "ResNet18Encoder",
    "SegNetEncoder",
    "TaskHeads",
    "is_shared",
    "lenet_hps",
    "max_pool_with_argmax",
    "max_unpool",
    "mlp_hps",
    "narrow_resnet_hps",
    "resnet18_hps",
    "segnet_mtl",
]
