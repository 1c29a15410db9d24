"""Learning to Branch (Guo, Lee, Ulbricht, ICML 2020): a tree of stages whose branching is learnt
with Gumbel-softmax parent choices."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from mtlx.models._cross_stitch import readout_per_task
from mtlx.models._stages import BackboneSpec, backbone_spec, heads_per_task, map_stacked, stack


def gumbel_softmax(
    key: jax.Array, logits: jax.Array, temperature: float, hard: bool = False
) -> jax.Array:
    r""":math:`\mathrm{softmax}((\theta + g) / \tau)` over the last axis, :math:`g` standard
    Gumbel noise; ``hard``: the one-hot argmax in the forward pass with the soft sample's
    gradient (straight-through)."""
    gumbel = jax.random.gumbel(key, logits.shape, logits.dtype)
    soft = jax.nn.softmax((logits + gumbel) / temperature, axis=-1)
    if not hard:
        return soft
    one_hot = jax.nn.one_hot(jnp.argmax(soft, axis=-1), logits.shape[-1], dtype=soft.dtype)
    return soft + jax.lax.stop_gradient(one_hot - soft)


class LearningToBranch(nnx.Module):
    r"""Learning to Branch (Guo, Lee, Ulbricht, "Learning to Branch for Multi-Task Learning",
    ICML 2020).

    A super-graph of the backbone's stages: stage k has :math:`K_k` nodes (copies of the stage;
    the last stage has one node per task), and every node of stage k >= 1 reads one parent of
    stage k - 1, chosen by a categorical distribution with learnt logits :math:`\theta^k`
    (``(K_k, K_{k-1})``). Training samples the choice with the Gumbel-softmax relaxation:

    .. math:: h^{k}_i = \mathrm{stage}^{k}_i\Big(\sum_j z^{k}_{ij}\, h^{k-1}_j\Big), \quad
        z^{k}_{i\cdot} = \mathrm{softmax}\big((\theta^{k}_{i\cdot} + g) / \tau\big), \quad
        y_t = h_t(h^{K}_t)

    (all stage-0 nodes read the input). ``model.eval()`` (``deterministic``) takes each node's
    most likely parent, which is the learnt tree: nodes that share a parent branch from it. The
    Gumbel noise comes from the model's own ``gumbel`` PRNG stream (a model-state variable the
    trainer carries, as dropout's).

    What is shared: LibMTL 1.1.5 has no LTB; following its convention that the encoder is the
    shared part, every node (``nodes``, stacked ``(K_k, ...)`` per stage) and the branching
    logits (``branch_logits``) are shared, the heads task-specific. Exact too: a node of stage
    k < K-1 may feed any task.

    Args:
      spec: the backbone whose stages are the tree's layers.
      num_tasks: T.
      out_features: each head's output size, or one per task.
      nodes: :math:`K_k` for every stage but the last (default: T at every stage, the paper's
        fully-branched super-graph); the last stage always has T nodes.
      temperature: the Gumbel-softmax temperature :math:`\tau`.
      hard: straight-through one-hot samples in training (default: soft samples).
      rngs: the random streams (the ``gumbel`` stream, or ``default``, seeds the sampling).
    """

    def __init__(
        self,
        spec: BackboneSpec,
        num_tasks: int,
        out_features: int | Sequence[int],
        *,
        nodes: Sequence[int] | None = None,
        temperature: float = 1.0,
        hard: bool = False,
        rngs: nnx.Rngs,
    ):
        num_tasks = int(num_tasks)
        if num_tasks < 1:
            raise ValueError(f"num_tasks must be positive; got {num_tasks}.")
        inner = (num_tasks,) * (spec.num_stages - 1) if nodes is None else tuple(map(int, nodes))
        if len(inner) != spec.num_stages - 1 or (inner and min(inner) < 1):
            raise ValueError(
                f"nodes gives a positive node count for each of the first {spec.num_stages - 1} "
                f"stages; got {nodes!r}."
            )
        if not float(temperature) > 0:
            raise ValueError(f"temperature must be positive; got {temperature!r}.")
        self.spec = spec
        self.node_counts = (*inner, num_tasks)
        self.temperature = float(temperature)
        self.hard = bool(hard)
        self.deterministic = False
        self.nodes = nnx.List(
            [
                stack(lambda r, k=k: spec.make_stage(k, r), count, rngs)
                for k, count in enumerate(self.node_counts)
            ]
        )
        self.branch_logits = nnx.List(
            [
                nnx.Param(jnp.zeros((self.node_counts[k], self.node_counts[k - 1]), jnp.float32))
                for k in range(1, spec.num_stages)
            ]
        )
        self.gumbel = rngs["gumbel"].fork()
        self.heads = spec.make_heads(out_features, num_tasks, rngs)

    @property
    def num_tasks(self) -> int:
        return self.heads.num_tasks

    def branch_weights(self, k: int) -> jax.Array:
        """Stage k+1's parent weights ``(K_{k+1}, K_k)``: a Gumbel-softmax sample in training,
        the one-hot most likely parent in ``eval`` mode."""
        logits = self.branch_logits[k][...]
        if self.deterministic:
            return jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=logits.dtype)
        return gumbel_softmax(self.gumbel(), logits, self.temperature, self.hard)

    def parents(self) -> list[list[int]]:
        """The learnt tree: for every stage k >= 1, each node's most likely parent in stage k-1."""
        return [[int(j) for j in jnp.argmax(t[...], axis=-1)] for t in self.branch_logits]

    def __call__(self, x: jax.Array) -> tuple[jax.Array, ...]:
        h = map_stacked(lambda node, v: node(v)[1], self.nodes[0], x, in_axes=None)
        for k in range(1, self.spec.num_stages):
            mixed = jnp.einsum("ij,jn...->in...", self.branch_weights(k - 1), h)
            h = map_stacked(lambda node, v: node(v)[1], self.nodes[k], mixed)
        return heads_per_task(self.heads, readout_per_task(self.spec, h))


def ltb(
    num_tasks: int = 2,
    out_features: int | Sequence[int] = 10,
    *,
    in_features: int | None = None,
    backbone: str = "mlp",
    hidden: Sequence[int] = (64, 64),
    in_channels: int = 1,
    small_inputs: bool = False,
    nodes: Sequence[int] | None = None,
    temperature: float = 1.0,
    hard: bool = False,
    rngs: nnx.Rngs,
) -> LearningToBranch:
    """A :class:`LearningToBranch` tree over the stages of ``backbone`` (backbone arguments as
    :func:`mtlx.models.cross_stitch`)."""
    spec = backbone_spec(
        backbone,
        in_features=in_features,
        in_channels=in_channels,
        hidden=hidden,
        small_inputs=small_inputs,
    )
    return LearningToBranch(
        spec, num_tasks, out_features, nodes=nodes, temperature=temperature, hard=hard, rngs=rngs
    )
