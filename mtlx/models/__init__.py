"""Multi-task models in Flax NNX: hard parameter sharing and the architectures beyond it.

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

Architectures (each a factory taking ``num_tasks``, ``out_features``, a ``backbone`` name among
``"mlp"``, ``"lenet"``, ``"resnet18"`` and its sizes, and the paper's own arguments):

* hard parameter sharing: :func:`mlp_hps`, :func:`lenet_hps`, :func:`resnet18_hps`,
  :func:`narrow_resnet_hps`, :func:`segnet_mtl`;
* mixtures of experts: :func:`mmoe`, :func:`cgc`, :func:`ple`, :func:`dselect_k`;
* task columns: :func:`cross_stitch`, :func:`nddr_cnn`, :func:`ltb` (Learning to Branch);
* attention over a shared backbone: :func:`mtan`.

**Shared or task-specific.** One rule for every model, so that :func:`is_shared` (the trainer's
default ``shared=``) is right without arguments: a parameter is task-specific exactly when its
path goes through the attribute ``heads`` or ``task_specific``, and every such leaf carries a
leading task axis T whose slice t only task t uses (built stacked with ``nnx.vmap``). Everything
else is shared and gets the full T-row Jacobian. What goes where follows LibMTL's
``get_share_params``: MoE gates and task experts and MTAN's attention units are task-specific;
Cross-stitch / NDDR / LTB columns and their mixing units (LibMTL: "the encoder") are shared.
Each class's docstring says which of its parameters are which and where it departs from LibMTL.

This package imports only flax, jax and numpy.
"""

from mtlx.models._cross_stitch import CrossStitch, cross_stitch
from mtlx.models._hps import MultiTaskModel, PerTaskHeads, TaskHeads, is_shared
from mtlx.models._lenet import LeNetEncoder, LeNetHead, lenet_hps
from mtlx.models._ltb import LearningToBranch, ltb
from mtlx.models._mlp import MLP, mlp_hps
from mtlx.models._moe import CGC, PLE, DSelectK, MMoE, cgc, dselect_k, mmoe, ple
from mtlx.models._mtan import MTAN, AttentionUnit, mtan
from mtlx.models._narrow_resnet import NarrowBlock, NarrowResNetEncoder, narrow_resnet_hps
from mtlx.models._nddr import NDDR, NDDRLayer, nddr_cnn
from mtlx.models._resnet import BasicBlock, ResNet18Encoder, resnet18_hps
from mtlx.models._segnet import (
    NYUV2_TASKS,
    DenseHead,
    SegNetEncoder,
    max_pool_with_argmax,
    max_unpool,
    segnet_mtl,
)
from mtlx.models._stages import BACKBONES, BackboneSpec, StagedEncoder

__all__ = [
    "BACKBONES",
    "CGC",
    "MLP",
    "MTAN",
    "NDDR",
    "NYUV2_TASKS",
    "PLE",
    "AttentionUnit",
    "BackboneSpec",
    "BasicBlock",
    "CrossStitch",
    "DSelectK",
    "DenseHead",
    "LeNetEncoder",
    "LeNetHead",
    "LearningToBranch",
    "MMoE",
    "MultiTaskModel",
    "NDDRLayer",
    "NarrowBlock",
    "NarrowResNetEncoder",
    "PerTaskHeads",
    "ResNet18Encoder",
    "SegNetEncoder",
    "StagedEncoder",
    "TaskHeads",
    "cgc",
    "cross_stitch",
    "dselect_k",
    "is_shared",
    "lenet_hps",
    "ltb",
    "max_pool_with_argmax",
    "max_unpool",
    "mlp_hps",
    "mmoe",
    "mtan",
    "narrow_resnet_hps",
    "nddr_cnn",
    "ple",
    "resnet18_hps",
    "segnet_mtl",
]
