"""The per-task Jacobian as weighting methods see it: ask for rows, the Gramian, or ``sum_t w_t J_t``.

These implementations share one interface:

* :class:`StackedJacobian` wraps a plain pytree whose leaves carry a leading task axis ``(T, ...)``
  (what a user builds by hand, or ``jax.jacrev`` returns).
* :class:`LinearizedJacobian` holds the VJP of the loss vector (``jax.vjp`` returns a pytree, so
  the object passes through ``optax.chain``, ``jax.jit`` and ``jax.lax.scan``) and computes only
  what a method asks for: ``combine(w)`` is ONE backward pass, rows are traced only when asked.
* :class:`FeatureJacobian` (``value_and_jacobian_through_features(..., gramian="features")``)
  is a different, cheaper algorithm: its Gramian is that of the per-task gradients with respect
  to the shared features (MGDA-UB), its ``combine(w)`` one encoder backward pass.

Each knows which parameter leaves are *shared* (they get the aggregated gradient) and which are
*task-specific* (used by one task: a head of its own, or a leading T axis whose slice t only task
t uses, e.g. stacked heads or Recon-split layers): those get their own task's gradient and never
enter the Gramian.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any
TaskSpecificMode = Literal["own", "weighted"]
# How task-specific leaves are combined: "own" (each its own task's gradient), "weighted" (the
# same weights as the shared leaves), or a (T,) array of their own weights.
TaskSpecific = TaskSpecificMode | jax.Array

_HIGHEST = jax.lax.Precision.HIGHEST


def gramian_dtype(dtype: Any) -> Any:
    """The dtype a Gramian is accumulated in: float32, or wider when the inputs are wider."""
    return jnp.promote_types(dtype, jnp.float32)


def leaf_gramian(x: jax.Array) -> jax.Array:
    """``x x^T`` over every axis but the leading task axis, accumulated in float32 or wider."""
    x = x.reshape(x.shape[0], -1)
    return jnp.matmul(x, x.T, precision=_HIGHEST, preferred_element_type=gramian_dtype(x.dtype))


def weighted_sum(weights: jax.Array, x: jax.Array) -> jax.Array:
    """``sum_t weights[t] x[t]``, in x's dtype."""
    return jnp.tensordot(weights.astype(x.dtype), x, axes=1, precision=_HIGHEST)


_MISPLACED_FIX = (
    "put the weighting first in optax.chain, with optax transforms and wrappers (optax.MultiSteps, "
    "optax.apply_if_finite) after it, e.g. optax.chain(mtlx.ew(), optax.clip(1.0), "
    "optax.MultiSteps(optax.adam(1e-3), every_k_schedule=4)); or materialise the rows with "
    "mtlx.jacobian_rows(jac) (leaves (T, *param.shape), on which a transform acts per task) and "
    "pass those"
)


class _JacobianType(type):
    """The metaclass of the Jacobians: its ``repr`` says what to do when optax meets one.

    A transform chained before a weighting that pairs the updates with params-shaped trees
    (``optax.add_decayed_weights``, ``optax.trace``, ``optax.scale_by_adam``), or a wrapper around
    a chain that holds one (``optax.MultiSteps``, ``optax.apply_if_finite``), fails inside
    ``jax.tree.map`` or ``jax.lax.cond`` before any mtlx code runs, and JAX's structure error
    prints only the type of the mismatched node: its repr is where the fix can be named.
    """

    def __repr__(cls) -> str:
        return (
            f"<class 'mtlx.{cls.__name__}'> (an mtlx per-task Jacobian, which only an mtlx "
            "weighting takes: an optax transform or wrapper met it as if it were params-shaped "
            f"updates. To fix: {_MISPLACED_FIX})"
        )


class Jacobian(metaclass=_JacobianType):
    """Interface of a per-task Jacobian; see the module docstring."""

    num_tasks: int
    shared_mask: tuple[bool, ...]
    treedef: Any

    @property
    def rows_stand_in(self) -> bool:
        """Whether :meth:`materialize` may replace this Jacobian for a method that follows: its
        rows give the same Gramian and combination. False where the Gramian is not the rows'
        (:class:`FeatureJacobian`), so that a transform reading the rows (the conflict monitor)
        hands the Jacobian on as it came."""
        return True

    def rows(self) -> PyTree:
        """Every leaf with a leading task axis: leaf ``t`` is ``d L_t / d params``."""
        raise NotImplementedError

    def gramian(self) -> jax.Array:
        """``G = J J^T`` over the shared leaves, shape ``(T, T)``, in float32 or wider."""
        raise NotImplementedError

    def combine(self, weights: jax.Array, task_specific: TaskSpecific = "own") -> PyTree:
        """Params-shaped ``sum_t weights[t] J_t`` on shared leaves.

        Args:
          weights: ``(T,)`` task weights.
          task_specific: ``"own"`` gives each task-specific leaf its own task's plain gradient (what
            gradient-aggregation methods do: heads skip the aggregator); ``"weighted"`` weights it
            too, as backpropagating ``sum_t w_t L_t`` does (loss-weighting methods); a ``(T,)``
            array gives task-specific leaves ``sum_t h_t J_t`` with weights ``h`` of their own
            (IMTL: each head gets its task's scaled gradient).
        """
        raise NotImplementedError

    def materialize(self) -> StackedJacobian:
        """The rows as a :class:`StackedJacobian`, by value: compute them once, read them often."""
        return StackedJacobian(self.rows(), self.shared_mask)

    def gramian_and_reusable(self) -> tuple[jax.Array, Jacobian]:
        """``(G, jac)``: the Gramian and the Jacobian to combine from afterwards.

        Without a memory bound the rows are materialised once and both the Gramian and the
        combination read them (no second backward pass). With ``chunk_size`` the Gramian is built
        block by block and the combination is one more backward pass, so the T x P Jacobian is
        never held.
        """
        jac = self.materialize()
        return jac.gramian(), jac

    def check_intact(self, method: str) -> None:
        """A ValueError when a leaf-wise transform rebuilt this Jacobian from changed leaves.

        Only the engine's lazy Jacobian can be damaged that way (its leaves are VJP residuals);
        a stacked Jacobian's leaves are the rows, which a leaf-wise transform may change.
        """
        del method

    @property
    def has_task_specific(self) -> bool:
        return not all(self.shared_mask)

    def _mask_tree(self) -> PyTree:
        return jax.tree.unflatten(self.treedef, list(self.shared_mask))


def head_weights(weights: jax.Array, task_specific: TaskSpecific) -> jax.Array | None:
    """The weights of the task-specific leaves: ``None`` when they are the shared leaves' own."""
    if isinstance(task_specific, str):
        if task_specific == "weighted":
            return None
        if task_specific == "own":
            return jnp.ones_like(weights)
        raise ValueError(
            f"task_specific must be 'own', 'weighted' or a (T,) array; got {task_specific!r}."
        )
    heads = jnp.asarray(task_specific)
    if heads.shape != weights.shape:
        raise ValueError(
            f"task-specific weights have shape {heads.shape}; expected {weights.shape}."
        )
    return heads


def _check_weights(weights: jax.Array, num_tasks: int) -> jax.Array:
    weights = jnp.asarray(weights)
    if weights.shape != (num_tasks,):
        raise ValueError(
            f"task weights have shape {weights.shape}; the Jacobian has {num_tasks} tasks, so the "
            f"weights must have shape ({num_tasks},)."
        )
    return weights


def _gramian_of_rows(rows_leaves: Sequence[jax.Array], mask: Sequence[bool], t: int) -> jax.Array:
    shared = [x for x, s in zip(rows_leaves, mask) if s]
    if not shared:
        dtype = rows_leaves[0].dtype if rows_leaves else jnp.float32
        return jnp.zeros((t, t), gramian_dtype(dtype))
    return sum(leaf_gramian(x) for x in shared)


@jax.tree_util.register_pytree_node_class
class StackedJacobian(Jacobian):
    """A Jacobian given as a pytree of task-stacked leaves ``(T, *leaf_shape)``."""

    def __init__(self, rows: PyTree, shared_mask: Sequence[bool] | None = None):
        leaves, self.treedef = jax.tree.flatten(rows)
        if not leaves:
            raise ValueError("the Jacobian pytree has no leaves.")
        self._leaves = leaves
        for leaf in leaves:
            if jnp.ndim(leaf) < 1:
                raise ValueError(
                    "every Jacobian leaf needs a leading task axis (T, *param_shape); got a scalar "
                    "leaf."
                )
        sizes = {jnp.shape(leaf)[0] for leaf in leaves}
        if len(sizes) != 1:
            raise ValueError(
                f"the Jacobian's leaves disagree on the number of tasks (leading axis): {sorted(sizes)}."
                " Every leaf must be (T, *param_shape) with the same T."
            )
        self.num_tasks = sizes.pop()
        mask = (True,) * len(leaves) if shared_mask is None else tuple(bool(m) for m in shared_mask)
        if len(mask) != len(leaves):
            raise ValueError(f"shared_mask has {len(mask)} entries for {len(leaves)} leaves.")
        self.shared_mask = mask

    def tree_flatten(self):
        return self._leaves, (self.treedef, self.shared_mask, self.num_tasks)

    @classmethod
    def tree_unflatten(cls, aux, children):
        # No re-validation: jax.tree.map may rebuild the object with leaves that are not arrays
        # (None, in_axes specs, shardings), and validated objects need no second check.
        jac = object.__new__(cls)
        jac.treedef, jac.shared_mask, jac.num_tasks = aux
        jac._leaves = list(children)
        return jac

    def rows(self) -> PyTree:
        return jax.tree.unflatten(self.treedef, self._leaves)

    def materialize(self) -> StackedJacobian:
        return self

    def gramian_and_reusable(self) -> tuple[jax.Array, Jacobian]:
        return self.gramian(), self

    def gramian(self) -> jax.Array:
        return _gramian_of_rows(self._leaves, self.shared_mask, self.num_tasks)

    def combine(self, weights: jax.Array, task_specific: TaskSpecific = "own") -> PyTree:
        weights = _check_weights(weights, self.num_tasks)
        heads = head_weights(weights, task_specific)
        out = [
            weighted_sum(weights if (s or heads is None) else heads, x)
            for x, s in zip(self._leaves, self.shared_mask)
        ]
        return jax.tree.unflatten(self.treedef, out)


# The guard leaf of every LinearizedJacobian (see its tree_flatten): a numpy scalar, so building a
# Jacobian allocates nothing on the device.
_GUARD = np.asarray(True)


@jax.tree_util.register_pytree_node_class
class LinearizedJacobian(Jacobian):
    """A Jacobian held as the VJP of the ``(T,)`` loss vector at the current parameters.

    ``combine(w)`` costs one backward pass; ``rows()`` costs T backward passes batched by
    ``jax.vmap`` (or ``chunk_size`` at a time with ``jax.lax.map``); ``gramian()`` with a
    ``chunk_size`` never holds more than ``chunk_size`` rows: column block ``G[:, c] = J R_c^T`` is
    a batched forward-mode product (the transpose of the VJP) with the block's rows ``R_c``.
    """

    def __init__(
        self,
        vjp_fn: Callable[[jax.Array], tuple[PyTree]],
        losses: jax.Array,
        treedef: Any,
        shared_mask: Sequence[bool],
        chunk_size: int | None = None,
    ):
        self.vjp_fn = vjp_fn
        self.losses = losses
        self.treedef = treedef
        self.shared_mask = tuple(shared_mask)
        self.chunk_size = chunk_size
        self.num_tasks = losses.shape[0]
        self._guard = _GUARD

    def tree_flatten(self):
        # The residuals must be leaves: the object crosses jax.jit and jax.lax.scan boundaries.
        # The guard, a boolean scalar leaf, is how a leaf-wise transform that changed them is
        # caught: JAX's transformations hand leaves back with their dtype, whereas arithmetic
        # (optax.scale, optax.clip, an optimizer's moments) promotes a bool, and
        # optax.clip_by_global_norm fails on one (its lax.select wants one dtype). Transforms
        # that pair the updates with params-shaped trees fail on the structure (_JacobianType).
        # Not caught: a map that is the identity on finite values (optax.zero_nans), which
        # changes residuals only where they are NaN.
        children = (self._guard, self.vjp_fn, self.losses)
        return children, (self.treedef, self.shared_mask, self.chunk_size, self.num_tasks)

    @classmethod
    def tree_unflatten(cls, aux, children):
        # No validation here: jax.tree.map rebuilds the object with whatever its function returns
        # (per-leaf norms or NaN flags in optax, None, in_axes specs); check_intact() is called
        # where the Jacobian is used.
        jac = object.__new__(cls)
        jac._guard, jac.vjp_fn, jac.losses = children
        jac.treedef, jac.shared_mask, jac.chunk_size, jac.num_tasks = aux
        return jac

    def check_intact(self, method: str) -> None:
        guard_dtype = getattr(self._guard, "dtype", None)
        losses_shape = getattr(self.losses, "shape", None)
        if guard_dtype != np.bool_ or losses_shape != (self.num_tasks,):
            raise ValueError(
                f"mtlx.{method} got the engine's Jacobian after a leaf-wise transform changed it "
                "(an optax transform such as scale, clip or clip_by_global_norm chained BEFORE "
                "the weighting). The engine's Jacobian holds the VJP's residuals, not the per-task "
                f"gradients, so that transform did not act on the gradients: {_MISPLACED_FIX}."
            )

    def _vjp_leaves(self, cotangent: jax.Array) -> list[jax.Array]:
        (grads,) = self.vjp_fn(cotangent.astype(self.losses.dtype))
        return jax.tree.leaves(grads)

    def _map_over_tasks(self, fn: Callable[[jax.Array], Any], cotangents: jax.Array) -> Any:
        if self.chunk_size is None or self.chunk_size >= cotangents.shape[0]:
            return jax.vmap(fn)(cotangents)
        return jax.lax.map(fn, cotangents, batch_size=self.chunk_size)

    def _row_leaves(self) -> list[jax.Array]:
        basis = jnp.eye(self.num_tasks, dtype=self.losses.dtype)
        return self._map_over_tasks(self._vjp_leaves, basis)

    def rows(self) -> PyTree:
        return jax.tree.unflatten(self.treedef, self._row_leaves())

    def gramian_and_reusable(self) -> tuple[jax.Array, Jacobian]:
        if self.chunk_size is None:
            return super().gramian_and_reusable()
        return self.gramian(), self

    def gramian(self) -> jax.Array:
        if self.chunk_size is None:
            return _gramian_of_rows(self._row_leaves(), self.shared_mask, self.num_tasks)
        jvp_fn = jax.linear_transpose(self.vjp_fn, self.losses)

        def gramian_column(e_t: jax.Array) -> jax.Array:
            # Only the shared leaves enter the Gramian: zero the task-specific part of row t.
            row = [
                x if s else jnp.zeros_like(x)
                for x, s in zip(self._vjp_leaves(e_t), self.shared_mask)
            ]
            (column,) = jvp_fn((jax.tree.unflatten(self.treedef, row),))
            return column.astype(gramian_dtype(column.dtype))

        basis = jnp.eye(self.num_tasks, dtype=self.losses.dtype)
        columns = self._map_over_tasks(gramian_column, basis)
        return 0.5 * (columns + columns.T)  # G is symmetric; averaging removes rounding asymmetry

    def combine(self, weights: jax.Array, task_specific: TaskSpecific = "own") -> PyTree:
        weights = _check_weights(weights, self.num_tasks)
        heads = head_weights(weights, task_specific)
        if heads is None or not self.has_task_specific:
            return jax.tree.unflatten(self.treedef, self._vjp_leaves(weights))
        # Shared leaves get sum_t w_t J_t, task-specific ones sum_t h_t J_t. Two separate VJPs, not
        # one batched over both cotangents: under jit XLA drops the second VJP's unused shared-leaf
        # gradients, so it costs only the backward pass down to the task-specific leaves (the heads).
        weighted = self._vjp_leaves(weights)
        own = self._vjp_leaves(heads)
        out = [w if s else o for w, o, s in zip(weighted, own, self.shared_mask)]
        return jax.tree.unflatten(self.treedef, out)


@jax.tree_util.register_pytree_node_class
class FeatureJacobian(Jacobian):
    """The Jacobian of ``heads(encoder(x))`` whose Gramian is taken in FEATURE space.

    A different, cheaper algorithm than the parameter-space one, not the same one faster: the
    Gramian is ``G_Z[s, t] = <dL_s/dZ, dL_t/dZ>`` (summed over the batch and every feature axis)
    of the per-task gradients with respect to the shared features ``Z``, from T head VJPs
    batched by ``jax.vmap`` and no encoder backward pass. The encoder rows are
    ``J_t = (dZ/dtheta)^T dL_t/dZ``, so the parameter-space Gramian is ``J_Z A J_Z^T`` with
    ``A = (dZ/dtheta)(dZ/dtheta)^T``; ``G_Z`` drops ``A``, and a method's weights from ``G_Z``
    are in general not its weights from ``J J^T``. This is MGDA-UB (Sener & Koltun, NeurIPS 2018,
    the upper bound) and LibMTL's ``rep_grad=True``, for every method that reads only the
    Gramian (LibMTL sums ``dL_t/dZ`` over the batch before its Gramian; this one does not).

    ``combine(w)`` is ONE encoder VJP at the cotangent ``sum_t w_t dL_t/dZ`` (and the heads' VJP:
    head leaves get ``head_weights``' combination, their own task's gradient under ``"own"``),
    exactly as :class:`LinearizedJacobian` combines; ``rows()`` are the exact parameter-space
    rows, T encoder backward passes (``chunk_size`` at a time), so row-reading methods still
    work, at their usual cost.
    """

    def __init__(
        self,
        encoder_vjp: Callable[[PyTree], tuple[PyTree]],
        heads_vjp: Callable[[jax.Array], tuple[PyTree, PyTree]],
        losses: jax.Array,
        treedef: Any,
        shared_mask: Sequence[bool],
        chunk_size: int | None = None,
    ):
        self.encoder_vjp = encoder_vjp
        self.heads_vjp = heads_vjp
        self.losses = losses
        self.treedef = treedef
        self.shared_mask = tuple(shared_mask)
        self.chunk_size = chunk_size
        self.num_tasks = losses.shape[0]
        self._guard = _GUARD

    @property
    def rows_stand_in(self) -> bool:
        return False  # its Gramian is the features', not the rows'

    def tree_flatten(self):
        # As LinearizedJacobian: the VJPs' residuals are leaves, the guard catches a leaf-wise
        # transform that changed them.
        children = (self._guard, self.encoder_vjp, self.heads_vjp, self.losses)
        return children, (self.treedef, self.shared_mask, self.chunk_size, self.num_tasks)

    @classmethod
    def tree_unflatten(cls, aux, children):
        jac = object.__new__(cls)
        jac._guard, jac.encoder_vjp, jac.heads_vjp, jac.losses = children
        jac.treedef, jac.shared_mask, jac.chunk_size, jac.num_tasks = aux
        return jac

    check_intact = LinearizedJacobian.check_intact
    _map_over_tasks = LinearizedJacobian._map_over_tasks

    def _heads(self, cotangent: jax.Array) -> tuple[PyTree, PyTree]:
        return self.heads_vjp(cotangent.astype(self.losses.dtype))

    def _params_leaves(self, cotangent: jax.Array, heads: jax.Array | None = None) -> list:
        """The gradient leaves of ``cotangent . L`` (heads: of ``heads . L`` when given)."""
        head_grads, feature_cotangent = self._heads(cotangent)
        (encoder_grads,) = self.encoder_vjp(feature_cotangent)
        if heads is not None:
            # One more head VJP; under jit XLA drops its unused feature cotangent, so the
            # encoder is still pulled back once.
            head_grads, _ = self._heads(heads)
        return jax.tree.leaves({"encoder": encoder_grads, "heads": head_grads})

    def feature_gradients(self) -> PyTree:
        """``dL_t / dZ`` for every task: the features' pytree, every leaf ``(T, *leaf_shape)``."""
        basis = jnp.eye(self.num_tasks, dtype=self.losses.dtype)
        return self._map_over_tasks(lambda e: self._heads(e)[1], basis)

    def gramian(self) -> jax.Array:
        """The feature Gramian ``G_Z = J_Z J_Z^T`` ``(T, T)``, in float32 or wider."""
        leaves = [
            x
            for x in jax.tree.leaves(self.feature_gradients())
            if jnp.issubdtype(x.dtype, jnp.inexact)
        ]
        if not leaves:
            return jnp.zeros((self.num_tasks,) * 2, gramian_dtype(self.losses.dtype))
        return sum(leaf_gramian(x) for x in leaves)

    def gramian_and_reusable(self) -> tuple[jax.Array, Jacobian]:
        # No rows to reuse: the combination is one encoder VJP, whatever the Gramian cost.
        return self.gramian(), self

    def rows(self) -> PyTree:
        basis = jnp.eye(self.num_tasks, dtype=self.losses.dtype)
        return jax.tree.unflatten(self.treedef, self._map_over_tasks(self._params_leaves, basis))

    def combine(self, weights: jax.Array, task_specific: TaskSpecific = "own") -> PyTree:
        weights = _check_weights(weights, self.num_tasks)
        heads = head_weights(weights, task_specific)
        # Encoder leaves are shared, head leaves task-specific (value_and_jacobian_through_features).
        return jax.tree.unflatten(self.treedef, self._params_leaves(weights, heads))


@jax.tree_util.register_pytree_node_class
class ScaledJacobian(Jacobian):
    """``D J`` with ``D = diag(scales)``, kept lazy: row t is ``scales[t] J_t``, heads included.

    What it costs is what the wrapped Jacobian costs: ``gramian()`` is ``D G D`` from the wrapped
    Gramian, ``combine(w)`` is the wrapped ``combine(scales * w)`` (one backward pass for a
    loss-only method after it), and rows are materialised only when a method reads them.
    """

    def __init__(self, base: Jacobian, scales: jax.Array):
        self.base = base
        self.scales = scales
        self.num_tasks = base.num_tasks
        self.shared_mask = base.shared_mask
        self.treedef = base.treedef

    def tree_flatten(self):
        return (self.base, self.scales), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        del aux
        base, scales = children
        jac = object.__new__(cls)
        jac.base, jac.scales = base, scales
        jac.num_tasks, jac.shared_mask, jac.treedef = (
            base.num_tasks,
            base.shared_mask,
            base.treedef,
        )
        return jac

    @property
    def rows_stand_in(self) -> bool:
        return self.base.rows_stand_in

    def check_intact(self, method: str) -> None:
        self.base.check_intact(method)

    def rows(self) -> PyTree:
        return jax.tree.map(
            lambda x: x * self.scales.astype(x.dtype).reshape((-1,) + (1,) * (x.ndim - 1)),
            self.base.rows(),
        )

    def gramian(self) -> jax.Array:
        return scale_gramian(self.base.gramian(), self.scales)

    def gramian_and_reusable(self) -> tuple[jax.Array, Jacobian]:
        gramian, base = self.base.gramian_and_reusable()
        return scale_gramian(gramian, self.scales), ScaledJacobian(base, self.scales)

    def combine(self, weights: jax.Array, task_specific: TaskSpecific = "own") -> PyTree:
        weights = _check_weights(weights, self.num_tasks)
        heads = head_weights(weights, task_specific)
        scales = self.scales.astype(weights.dtype)
        if heads is None:
            return self.base.combine(scales * weights, "weighted")
        return self.base.combine(scales * weights, scales * heads)


def scale_gramian(gramian: jax.Array, scales: jax.Array) -> jax.Array:
    """``D G D`` with ``D = diag(scales)``: the Gramian of the rows ``scales[t] g_t``."""
    scales = scales.astype(gramian.dtype)
    return gramian * jnp.outer(scales, scales)


def as_jacobian(jac: Jacobian | PyTree, *, method: str = "as_jacobian") -> Jacobian:
    """The :class:`Jacobian` for ``jac``: itself, or a :class:`StackedJacobian` of a plain pytree.

    Raises:
      ValueError: when ``jac`` is the engine's Jacobian rebuilt by a leaf-wise transform (an optax
        transform chained before the weighting); the message names ``method``.
    """
    if isinstance(jac, Jacobian):
        jac.check_intact(method)
        return jac
    return StackedJacobian(jac)


def check_task_losses(task_losses: Any, num_tasks: int, *, required: bool, method: str) -> Any:
    """Validates ``task_losses`` against the Jacobian's task axis; returns it as an array or None.

    Shapes are checked at trace time (a ``ValueError`` that names the mismatch). Values are checked
    only when concrete (outside ``jax.jit``): inside a jitted step there is no host sync, and the
    trainer checks the losses it logs.
    """
    if task_losses is None:
        if required:
            raise ValueError(
                f"mtlx.{method} needs the task losses: call update(jac, state, params, "
                "task_losses=losses) with losses of shape (T,)."
            )
        return None
    task_losses = jnp.asarray(task_losses)
    if task_losses.shape != (num_tasks,):
        raise ValueError(
            f"task_losses has shape {task_losses.shape} but the Jacobian's task axis has "
            f"{num_tasks} tasks: expected shape ({num_tasks},). Is the task axis of the Jacobian "
            "the leading one?"
        )
    if not isinstance(task_losses, jax.core.Tracer):
        values = np.asarray(task_losses)
        if not np.all(np.isfinite(values)):
            raise ValueError(f"task_losses contains non-finite values: {values}.")
    return task_losses
