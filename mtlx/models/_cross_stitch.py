"""Cross-stitch networks (Misra et al., CVPR 2016): one backbone column per task, mixed between
stages, and the column helpers that NDDR-CNN and Learning-to-Branch share."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mtlx.models._stages import (
    BackboneSpec,
    StagedEncoder,
    backbone_spec,
    heads_per_task,
    map_stacked,
    stack,
)


def run_stage(columns: nnx.Module, k: int, h: jax.Array, *, shared_input: bool = False):
    """Stage ``k`` of every stacked column: column t on ``h[t]`` (or on ``h`` itself, the same
    input for all, when ``shared_input``); outputs ``(T, N, ...)``."""
    return map_stacked(
        lambda col, v: col.stages[k](v)[1], columns, h, in_axes=None if shared_input else 0
    )


def readout_per_task(spec: BackboneSpec, h: jax.Array) -> jax.Array:
    """The backbone's readout on every task's features ``(T, N, ...)``."""
    return jax.vmap(spec.readout)(h)


class CrossStitch(nnx.Module):
    r"""Cross-stitch networks (Misra, Shrivastava, Gupta, Hebert, CVPR 2016).

    One column (a whole ``spec`` backbone) per task; after every stage but the last, a
    cross-stitch unit mixes the columns' outputs linearly:

    .. math:: \tilde h^{k}_t = \sum_s \alpha^{k}_{ts}\, h^{k}_s, \qquad
        h^{k+1}_t = \mathrm{stage}^{k+1}_t(\tilde h^{k}_t), \qquad y_t = h_t(h^{K}_t)

    ``units="matrix"`` (the paper): a T x T matrix per stitch, initialised to ``self_weight`` on
    the diagonal and ``(1 - self_weight) / (T - 1)`` off it (the paper's best init for two
    tasks: 0.9 / 0.1). ``units="libmtl"``: LibMTL 1.1.5's form, one weight vector per stitch
    shared by every task (every column reads the same mixture
    :math:`\sum_s \beta^k_s h^k_s`), initialised to ones; LibMTL allocates one more vector than
    it uses (``cross_unit`` is ``(4, T)`` for 3 stitches), so its count is T higher.

    What is shared: following LibMTL, whose ``get_share_params`` is the whole encoder, the
    columns (``columns``, stacked ``(T, ...)``) and the units (``stitch``) are shared, the heads
    task-specific. That is also exact: after the first stitch every column feeds every task.

    Args:
      spec: the columns' backbone.
      num_tasks: T.
      out_features: each head's output size, or one per task.
      units: ``"matrix"`` or ``"libmtl"``.
      self_weight: the diagonal initialisation of ``"matrix"`` units.
      rngs: the random streams.
    """

    def __init__(
        self,
        spec: BackboneSpec,
        num_tasks: int,
        out_features: int | Sequence[int],
        *,
        units: str = "matrix",
        self_weight: float = 0.9,
        rngs: nnx.Rngs,
    ):
        num_tasks = int(num_tasks)
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be positive; got {num_tasks}.")
        if spec.num_stages < 2:
            raise ValueError("cross-stitch needs a backbone of at least two stages.")
        self.spec = spec
        self.units = str(units)
        stitches = spec.num_stages - 1
        if self.units == "matrix":
            off = (1.0 - float(self_weight)) / (num_tasks - 1) if num_tasks > 1 else 0.0
            alpha = np.full((num_tasks, num_tasks), off, np.float32)
            np.fill_diagonal(alpha, float(self_weight))
            init = np.broadcast_to(alpha, (stitches, num_tasks, num_tasks))
        elif self.units == "libmtl":
            init = np.ones((stitches, num_tasks), np.float32)
        else:
            raise ValueError(f"units must be 'matrix' or 'libmtl'; got {units!r}.")
        self.columns = stack(lambda r: StagedEncoder(spec, rngs=r), num_tasks, rngs)
        self.stitch = nnx.Param(jnp.asarray(init))
        self.heads = spec.make_heads(out_features, num_tasks, rngs)

    @property
    def num_tasks(self) -> int:
        return self.heads.num_tasks

    def mix(self, k: int, h: jax.Array) -> jax.Array:
        """The k-th cross-stitch unit on the columns' outputs ``(T, N, ...)``."""
        alpha = self.stitch[k]
        if self.units == "matrix":
            return jnp.einsum("ts,sn...->tn...", alpha, h)
        mixed = jnp.einsum("s,sn...->n...", alpha, h)
        return jnp.broadcast_to(mixed[None], h.shape)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, ...]:
        h = run_stage(self.columns, 0, x, shared_input=True)
        for k in range(1, self.spec.num_stages):
            h = run_stage(self.columns, k, self.mix(k - 1, h))
        return heads_per_task(self.heads, readout_per_task(self.spec, h))


def cross_stitch(
    num_tasks: int = 2,
    out_features: int | Sequence[int] = 10,
    *,
    in_features: int | None = None,
    backbone: str = "mlp",
    hidden: Sequence[int] = (64, 64),
    in_channels: int = 1,
    small_inputs: bool = False,
    units: str = "matrix",
    self_weight: float = 0.9,
    rngs: nnx.Rngs,
) -> CrossStitch:
    """A :class:`CrossStitch` network: T columns of ``backbone`` (``"mlp"`` with ``in_features``
    and ``hidden``, ``"lenet"`` or ``"resnet18"`` with ``in_channels``), stitched between stages.

    ``model(x)`` returns T arrays ``(N, out_features)``.
    """
    spec = backbone_spec(
        backbone,
        in_features=in_features,
        in_channels=in_channels,
        hidden=hidden,
        small_inputs=small_inputs,
    )
    return CrossStitch(
        spec, num_tasks, out_features, units=units, self_weight=self_weight, rngs=rngs
    )
