"""The weighting value and the ONE builder that turns it into an optax transform.

Almost every task-balancing method is a rule for task weights ``w`` (T,) read from the task losses
or the Gramian ``G = J J^T``; the update is then ``sum_t w_t J_t``. A :class:`Weighting` holds that
rule as data: its state's ``init``, the pure ``weights(stats, state) -> (w, state)``, what it reads
and how it treats task-specific leaves (heads). :func:`as_transform` is the one place where a
weighting meets the Jacobian: it validates the inputs, computes only what the weighting reads,
calls it and combines the rows. Wrappers (an EMA of the weights, learned row scales) compose
weighting values; they never probe a transform.

Methods that are not weightings (GradDrop's sign masks, per-layer variants, methods that keep
per-task gradients in their state) read the rows: :func:`rows_transform` gives them the same
prologue (validation, the rows, shared and task-specific leaves).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtlx._src import jacobians

PyTree = Any
State = Any
Reads = Literal["nothing", "losses", "gramian", "rows"]
TaskSpecificMode = Literal["own", "weighted"]


class Stats(NamedTuple):
    """What a weighting reads at one step.

    Attributes:
      num_tasks: T (static).
      losses: the ``(T,)`` task losses, or ``None`` when they were not passed (only for a
        weighting that does not need them).
      gramian: ``G = J J^T`` ``(T, T)`` over the shared leaves (float32 or wider), or ``None``
        for a weighting that does not read it.
      rows: the Jacobian's rows (a :class:`Rows`) for a weighting that reads them (ExcessMTL's
        per-coordinate statistics), else ``None``.
    """

    num_tasks: int
    losses: jax.Array | None
    gramian: jax.Array | None
    rows: Rows | None = None


class TaskWeights(NamedTuple):
    """Weights for the shared leaves and, separately, for the task-specific ones.

    A weighting returns a plain ``(T,)`` array when its ``task_specific`` mode says how heads are
    treated; it returns this pair when the heads' weights are a vector of their own (IMTL: each
    head gets its task's scaled gradient ``e^{s_t} grad L_t``).
    """

    shared: jax.Array
    task_specific: jax.Array


WeightsFn = Callable[[Stats, State], tuple[jax.Array | TaskWeights, State]]


def empty_init(params: PyTree) -> optax.EmptyState:
    del params
    return optax.EmptyState()


@dataclasses.dataclass(frozen=True)
class Weighting:
    """A task-weighting method as a value: ``init``, the pure ``weights`` and what they read.

    Attributes:
      name: the method's name, used in error messages (``"pcgrad"``).
      weights: ``weights(stats, state) -> (w, new_state)``, pure and jit-compatible; ``w`` is a
        ``(T,)`` array or a :class:`TaskWeights`.
      init: ``init(params) -> state`` (a NamedTuple of arrays, or ``optax.EmptyState()``).
      reads: ``"gramian"`` (the builder computes ``G``; T backward passes with the engine's
        Jacobian), ``"rows"`` (the materialised rows, read again for the combination),
        ``"losses"`` or ``"nothing"`` (one backward pass).
      needs_losses: whether ``task_losses`` must be passed to ``update``.
      task_specific: ``"own"`` (heads get their own task's gradient, as gradient-aggregation
        methods do) or ``"weighted"`` (heads get the same weights, as backpropagating
        ``sum_t w_t L_t`` does).
      num_tasks: T when the state is built for a number of tasks (checked against the Jacobian),
        else ``None``.

    Example: a new Gramian method in a few lines::

      def my_weights(stats, state):
          return jax.nn.softmax(-jnp.diagonal(stats.gramian)), state

      tx = mtlx.as_transform(mtlx.Weighting("mine", my_weights, reads="gramian"))
    """

    name: str
    weights: WeightsFn
    init: Callable[[PyTree], State] = empty_init
    reads: Reads = "losses"
    needs_losses: bool = False
    task_specific: TaskSpecificMode = "own"
    num_tasks: int | None = None

    def __post_init__(self):
        if self.reads not in ("nothing", "losses", "gramian", "rows"):
            raise ValueError(
                f"Weighting {self.name!r}: reads must be 'nothing', 'losses', 'gramian' or "
                f"'rows'; got {self.reads!r}."
            )
        if self.task_specific not in ("own", "weighted"):
            raise ValueError(
                f"Weighting {self.name!r}: task_specific must be 'own' or 'weighted'; got "
                f"{self.task_specific!r}."
            )
        if self.num_tasks is not None and (
            not isinstance(self.num_tasks, int) or self.num_tasks < 1
        ):
            raise ValueError(
                f"mtlx.{self.name} needs num_tasks, a positive int; got {self.num_tasks!r}."
            )


class WeightingTransformation(optax.GradientTransformationExtraArgs):
    """The optax transform of a :class:`Weighting`; ``.weighting`` gives the value back.

    It is an ``optax.GradientTransformationExtraArgs`` (``init``, ``update``), so it goes into
    ``optax.chain``, ``optax.inject_hyperparams`` and everything else optax accepts; wrappers such
    as :func:`mtlx.cr_mogm` read ``.weighting`` to compose the method's math.
    """

    weighting: Weighting


def check_task_losses(task_losses: Any, num_tasks: int, *, required: bool, method: str) -> Any:
    """The task losses checked against the Jacobian's task axis (see ``jacobians``)."""
    return jacobians.check_task_losses(task_losses, num_tasks, required=required, method=method)


def check_num_tasks(method: str, expected: int | None, actual: int) -> None:
    """A ValueError when a method built for ``expected`` tasks (its state) sees ``actual`` tasks."""
    if expected is not None and actual != expected:
        raise ValueError(
            f"mtlx.{method} was built for num_tasks={expected}, but the Jacobian's task axis / the "
            f"task losses have {actual} tasks."
        )


def _leaf_mismatch(path: str, leaf_shape: tuple, param_shape: tuple) -> str:
    """What a Jacobian leaf of the wrong shape most likely is, for the error message."""
    if leaf_shape == param_shape:
        return (
            f"leaf {path} has the parameter's own shape {param_shape}: that is a params-shaped "
            "gradient (jax.grad or nnx.grad output, or the update of a weighting chained before "
            "this one), not a per-task Jacobian. Build the Jacobian with "
            "mtlx.value_and_jacobian(loss_fn) (or jax.jacrev of the (T,) loss vector), and chain "
            "one weighting only, first"
        )
    if len(leaf_shape) == len(param_shape) + 1 and leaf_shape[:-1] == param_shape:
        return (
            f"leaf {path} has shape {leaf_shape}, the parameter's shape {param_shape} followed by "
            f"a task axis of {leaf_shape[-1]}: the task axis must come first "
            "(jnp.moveaxis(leaf, -1, 0))"
        )
    return f"leaf {path} has shape {leaf_shape} for a parameter of shape {param_shape}"


def check_against_params(updates: Any, params: PyTree, method: str) -> None:
    """A ValueError, at trace time, unless ``updates`` is a per-task Jacobian of ``params``.

    The engine's Jacobian must have the tree structure of ``params``; a materialised one (a
    :class:`~mtlx.StackedJacobian` or a plain pytree) must have, leaf by leaf, shape
    ``(T, *param.shape)`` with one T. The message says what was passed instead: params-shaped
    gradients (from ``jax.grad``, or a second weighting), or a task axis that comes last. Without
    this check such inputs give an update of the wrong shape that ``optax.apply_updates``
    broadcasts, or an error that blames the number of tasks.
    """
    if params is None:
        return
    param_leaves, param_def = jax.tree_util.tree_flatten_with_path(params)
    if isinstance(updates, jacobians.StackedJacobian):
        rows, jac_def = updates.rows(), updates.treedef
    elif isinstance(updates, jacobians.Jacobian):
        rows, jac_def = None, updates.treedef
    else:
        rows, jac_def = updates, jax.tree.structure(updates)
    if jac_def != param_def and jac_def.num_leaves == 0 and param_def.num_leaves > 0:
        raise ValueError(
            f"mtlx.{method}: the Jacobian has no leaves but params has {param_def.num_leaves}. "
            "nnx.Optimizer.update keeps only the nnx.State in what it is given and drops an mtlx "
            "Jacobian: use mtlx.training.MultiTaskOptimizer (an nnx.Optimizer that takes it), or "
            "call tx.update(jac, opt_state, params, task_losses=losses) yourself."
        )
    if jac_def != param_def:
        raise ValueError(
            f"mtlx.{method}: the Jacobian's tree structure does not match params'. Is the "
            "Jacobian taken with respect to these params (the ones given to update)?\n"
            f"  Jacobian: {jac_def}\n  params:   {param_def}"
        )
    if rows is None:
        return  # the engine's rows are VJPs of params: their shapes are params' by construction
    problems, num_tasks = [], set()
    for (path, param), leaf in zip(param_leaves, jax.tree.leaves(rows)):
        leaf_shape, param_shape = tuple(jnp.shape(leaf)), tuple(jnp.shape(param))
        if leaf_shape[1:] == param_shape and len(leaf_shape) == len(param_shape) + 1:
            num_tasks.add(leaf_shape[0])
        else:
            problems.append(_leaf_mismatch(jax.tree_util.keystr(path), leaf_shape, param_shape))
    if problems:
        raise ValueError(
            f"mtlx.{method} takes a per-task Jacobian, every leaf (T, *param.shape); "
            + "; ".join(problems[:3])
            + (f" (and {len(problems) - 3} more leaves)" if len(problems) > 3 else "")
            + "."
        )
    if len(num_tasks) > 1:
        raise ValueError(
            f"mtlx.{method}: the Jacobian's leaves disagree on the number of tasks (leading axis): "
            f"{sorted(num_tasks)}. Every leaf must be (T, *param.shape) with the same T."
        )


def jacobian_of(
    updates: Any, params: PyTree, method: str, num_tasks: int | None = None
) -> jacobians.Jacobian:
    """The prologue every weighting and row method shares: ``updates`` checked, as a Jacobian.

    Checks, at trace time, that the engine's Jacobian was not rebuilt by a transform chained
    before the method, that a method built for ``num_tasks`` tasks gets that many, and (when
    ``params`` is given) that ``updates`` is a Jacobian of ``params``.
    """
    if isinstance(updates, jacobians.Jacobian):
        # Its task axis is known: a method built for another T says so before the shape check
        # (stacked heads have T in their shape, so the shape check would blame a leaf).
        updates.check_intact(method)
        check_num_tasks(method, num_tasks, updates.num_tasks)
    check_against_params(updates, params, method)
    jac = jacobians.as_jacobian(updates, method=method)
    check_num_tasks(method, num_tasks, jac.num_tasks)
    return jac


def check_gramian(gramian: jax.Array, num_tasks: int) -> jax.Array:
    gramian = jnp.asarray(gramian)
    if gramian.shape != (num_tasks, num_tasks):
        raise ValueError(
            f"gramian has shape {gramian.shape}; the Jacobian has {num_tasks} tasks, so it must "
            f"be ({num_tasks}, {num_tasks})."
        )
    return gramian


def combine(
    jac: jacobians.Jacobian, weights: jax.Array | TaskWeights, task_specific: TaskSpecificMode
) -> PyTree:
    """``sum_t w_t J_t`` with the heads treated as ``task_specific`` (or as ``weights`` says)."""
    if isinstance(weights, TaskWeights):
        return jac.combine(weights.shared, weights.task_specific)
    return jac.combine(weights, task_specific)


def keep_state_unless_finite(losses: jax.Array | None, new_state: State, state: State) -> State:
    """``new_state`` when every task loss is finite, else ``state`` unchanged.

    A method whose state follows the losses (UW's and IMTL-L's learned scales, FAMO's logits,
    MoCo's and DB-MTL's tracked gradients, DWA's history) must never store a value computed from
    a NaN or infinite loss: it would stay there for good, and every later update would be NaN.
    Outside ``jax.jit`` such losses are refused before this point; inside, the step's update is
    NaN (as its loss) and the state skips that step. :func:`mtlx.skip_nonfinite` skips the whole
    update as well.
    """
    if losses is None or not jax.tree.leaves(state):
        return new_state
    finite = jnp.all(jnp.isfinite(losses))
    return jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)


def as_transform(weighting: Weighting) -> WeightingTransformation:
    """The optax transform whose update is ``sum_t w_t J_t`` with ``w`` from ``weighting``.

    ``update(jac, state, params=None, *, task_losses=None, gramian=None)``: ``jac`` is the engine's
    Jacobian or a pytree whose leaves carry a leading task axis. The losses are checked against
    the task axis (and required when the weighting needs them). A weighting that reads the Gramian
    takes it from ``gramian=`` when the step already has it, else from the Jacobian (without a
    memory bound the rows are computed once and read twice: Gramian, then combination). A
    loss-only weighting costs one backward pass.
    """
    if not isinstance(weighting, Weighting):
        raise TypeError(f"as_transform takes an mtlx.Weighting; got {type(weighting).__name__}.")

    def update_fn(updates, state, params=None, *, task_losses=None, gramian=None, **extra_args):
        del extra_args
        jac = jacobian_of(updates, params, weighting.name, weighting.num_tasks)
        losses = check_task_losses(
            task_losses, jac.num_tasks, required=weighting.needs_losses, method=weighting.name
        )
        if weighting.reads == "gramian":
            if gramian is None:
                gramian, jac = jac.gramian_and_reusable()
            else:
                gramian = check_gramian(gramian, jac.num_tasks)
        else:
            gramian = None
        rows = None
        if weighting.reads == "rows":
            jac = jac.materialize()
            rows = rows_of(jac, losses)
        stats = Stats(jac.num_tasks, losses, gramian, rows)
        weights, new_state = weighting.weights(stats, state)
        if weighting.needs_losses:
            new_state = keep_state_unless_finite(losses, new_state, state)
        return combine(jac, weights, weighting.task_specific), new_state

    tx = WeightingTransformation(weighting.init, update_fn)
    tx.weighting = weighting
    return tx


def weighting_of(method: Any) -> Weighting | None:
    """The :class:`Weighting` behind ``method`` (a value or its transform), else ``None``."""
    if isinstance(method, Weighting):
        return method
    if isinstance(method, optax.GradientTransformation):
        return getattr(method, "weighting", None)
    return None


class Rows(NamedTuple):
    """What a row method reads: the Jacobian's rows, leaf by leaf, and the task losses.

    Attributes:
      leaves: every leaf ``(T, *param_shape)``, in the params' leaf order.
      shared_mask: one bool per leaf, True for shared leaves.
      losses: ``(T,)`` task losses or ``None``.
      num_tasks: T.
      treedef: the params' tree structure (layer names, per-task state of the same structure).
    """

    leaves: list[jax.Array]
    shared_mask: tuple[bool, ...]
    losses: jax.Array | None
    num_tasks: int
    treedef: Any = None

    @property
    def shared(self) -> list[jax.Array]:
        return [x for x, s in zip(self.leaves, self.shared_mask) if s]


RowsFn = Callable[[Rows, State], tuple[Sequence[jax.Array], State]]


def rows_of(jac: jacobians.Jacobian, losses: jax.Array | None) -> Rows:
    """The :class:`Rows` of ``jac`` (computed here: T backward passes for the engine's Jacobian)."""
    return Rows(jax.tree.leaves(jac.rows()), jac.shared_mask, losses, jac.num_tasks, jac.treedef)


def rows_transform(
    update_rows: RowsFn,
    *,
    name: str,
    init: Callable[[PyTree], State] = empty_init,
    needs_losses: bool = False,
    num_tasks: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    """The transform of a method that reads the rows (not a weighting of them).

    ``update_rows(rows, state) -> (leaves, new_state)`` gets a :class:`Rows` and returns one
    params-shaped leaf per Jacobian leaf; the prologue (losses, number of tasks, rows) is here.
    """

    def update_fn(updates, state, params=None, *, task_losses=None, **extra_args):
        del extra_args
        jac = jacobian_of(updates, params, name, num_tasks)
        losses = check_task_losses(task_losses, jac.num_tasks, required=needs_losses, method=name)
        leaves, new_state = update_rows(rows_of(jac, losses), state)
        if needs_losses:
            new_state = keep_state_unless_finite(losses, new_state, state)
        return jax.tree.unflatten(jac.treedef, list(leaves)), new_state

    return optax.GradientTransformationExtraArgs(init, update_fn)


def as_pref_vector(pref_vector: jax.typing.ArrayLike | None) -> jax.Array | None:
    """A method's preference vector as an array (None stays None); a ValueError unless a vector."""
    if pref_vector is None:
        return None
    pref = jnp.asarray(pref_vector)
    if pref.ndim != 1:
        raise ValueError(f"pref_vector must be a vector of shape (T,); got shape {pref.shape}.")
    return pref


def check_pref_vector(pref: jax.Array | None, num_tasks: int) -> None:
    """A ValueError when a preference vector's length is not the number of tasks."""
    if pref is not None and pref.shape[0] != num_tasks:
        raise ValueError(
            f"pref_vector has {pref.shape[0]} entries but the Jacobian has {num_tasks} tasks."
        )
