"""The Jacobian engine: task losses and a per-task Jacobian that computes only what a method asks.

``mtlx.value_and_jacobian(loss_fn)(params, batch)`` returns the ``(T,)`` losses and a
:class:`~mtlx.Jacobian` built from ONE forward pass and its VJP. A weighting method then asks for:

* ``jac.combine(w)``: ``sum_t w_t grad L_t``, one backward pass (loss-only methods: EW, RLW, UW-SO);
* ``jac.gramian()``: ``G = J J^T`` (T x T), from the rows, T backward passes batched by ``jax.vmap``
  (or, with ``chunk_size``, ``chunk_size`` rows at a time, never the whole T x P Jacobian);
* ``jac.rows()``: every leaf with a leading task axis (methods that are not weightings).

Task-specific parameters are marked with ``shared=``; they get their own task's gradient and never
enter ``G``. A task-specific leaf either carries a leading T axis whose slice t only task t uses
(stacked heads, Recon-split layers) or belongs to one task as a whole (per-task heads of different
shapes): either way ``d L_s / d leaf`` is zero for the other tasks, so the gradient of ``sum_t L_t``
is each task's own gradient, and one VJP gives it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp

from mtlx._src.jacobians import (
    FeatureJacobian,
    Jacobian,
    LinearizedJacobian,
    ScaledJacobian,
    StackedJacobian,
    as_jacobian,
)

__all__ = [
    "FeatureJacobian",
    "Jacobian",
    "LinearizedJacobian",
    "ScaledJacobian",
    "StackedJacobian",
    "as_jacobian",
    "jacobian_rows",
    "shared_mask",
    "value_and_jacobian",
    "value_and_jacobian_per_task",
    "value_and_jacobian_through_features",
]

PyTree = Any
SharedSpec = None | PyTree | Callable[[tuple, jax.Array], bool]


def shared_mask(params: PyTree, shared: SharedSpec = None) -> tuple[bool, ...]:
    """One bool per leaf of ``params``: True for a shared leaf, False for a task-specific one.

    Args:
      params: the parameters.
      shared: ``None`` (every leaf shared), a pytree of bools with ``params``' structure, or a
        predicate ``shared(path, leaf) -> bool`` on ``jax.tree_util`` key paths, e.g.
        ``lambda path, leaf: "heads" not in jax.tree_util.keystr(path)``.
    """
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(params)
    if shared is None:
        return (True,) * len(leaves_with_path)
    if callable(shared):
        return tuple(bool(shared(path, leaf)) for path, leaf in leaves_with_path)
    mask_leaves, mask_def = jax.tree.flatten(shared)
    if mask_def != treedef:
        raise ValueError(
            "the `shared` mask must have the structure of params; got\n"
            f"  mask:   {mask_def}\n  params: {treedef}"
        )
    return tuple(bool(m) for m in mask_leaves)


def _check_losses(losses: Any) -> jax.Array:
    losses = jnp.asarray(losses)
    if losses.ndim != 1:
        raise ValueError(
            f"loss_fn must return a vector of task losses of shape (T,); got shape {losses.shape}. "
            "Reduce over the batch inside loss_fn (per-example losses: vmap the loss and take the "
            "mean), and stack the tasks on axis 0."
        )
    if not jnp.issubdtype(losses.dtype, jnp.floating):
        raise ValueError(f"task losses must be floating point; got dtype {losses.dtype}.")
    return losses


def value_and_jacobian(
    loss_fn: Callable[..., Any],
    *,
    shared: SharedSpec = None,
    has_aux: bool = False,
    chunk_size: int | None = None,
) -> Callable[..., tuple[Any, Jacobian]]:
    r"""Turns ``loss_fn(params, *args) -> (T,)`` into ``(params, *args) -> (losses, jacobian)``.

    The Jacobian is lazy: its rows are ``jax.vmap`` over the VJP of the loss vector (no Python loop
    over tasks), and a method that only needs :math:`\sum_t w_t \nabla L_t` gets it from one VJP.

    Args:
      loss_fn: returns the ``(T,)`` task losses (``(losses, aux)`` with ``has_aux``).
      shared: which parameter leaves are shared; see :func:`shared_mask`. Task-specific leaves (used
        by one task each, or a leading T axis with slice t used by task t only) receive their own
        task's gradient.
      has_aux: as in ``jax.value_and_grad``: the result is ``((losses, aux), jacobian)``.
      chunk_size: at most this many Jacobian rows are live at once (``jax.lax.map`` with a batch
        size); the Gramian is then accumulated in column blocks. ``None``: all T rows at once.

    Returns:
      A function with ``loss_fn``'s arguments returning ``(losses, jacobian)``.

    Example::

      losses, jac = mtlx.value_and_jacobian(loss_fn)(params, batch)
      updates, state = tx.update(jac, state, params, task_losses=losses)
    """
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int or None; got {chunk_size!r}.")

    def value_and_jacobian_fn(params: PyTree, *args: Any, **kwargs: Any):
        mask = shared_mask(params, shared)
        if has_aux:
            losses, vjp_fn, aux = jax.vjp(
                lambda p: loss_fn(p, *args, **kwargs), params, has_aux=True
            )
        else:
            losses, vjp_fn = jax.vjp(lambda p: loss_fn(p, *args, **kwargs), params)
        losses = _check_losses(losses)
        jac = LinearizedJacobian(vjp_fn, losses, jax.tree.structure(params), mask, chunk_size)
        return ((losses, aux) if has_aux else losses), jac

    return value_and_jacobian_fn


def value_and_jacobian_per_task(
    task_loss_fn: Callable[..., Any],
    num_tasks: int,
    *,
    shared: SharedSpec = None,
    has_aux: bool = False,
) -> Callable[..., tuple[Any, Jacobian]]:
    r"""The Jacobian of a model that runs one forward pass per task, from ONE backward pass.

    For models where task t's loss comes from a pass of its own: Recon's split models (task t
    reads copy t of every split layer, :func:`mtlx.analysis.split_task_apply`), or tasks with their
    own inputs. Each pass gets its own copy :math:`\theta^{(t)}` of the parameters, and

    .. math:: J_t = \nabla_{\theta^{(t)}} \sum_s L_s(\theta^{(s)}) = \nabla L_t(\theta)

    so one backward pass through the T passes gives every row: T forward and T backward passes in
    all, where :func:`value_and_jacobian` on a function that runs the T passes itself would pull
    each of T cotangents back through all T passes (T² backward passes).

    Args:
      task_loss_fn: ``task_loss_fn(params, t, *args) -> scalar`` loss of task ``t`` (a Python
        int, so each task may run a different computation); ``(loss, aux)`` with ``has_aux``.
      num_tasks: T.
      shared: which parameter leaves are shared; see :func:`shared_mask`. Task-specific leaves
        get each task's own gradient, as in :func:`value_and_jacobian`.
      has_aux: the result is ``((losses, auxes), jacobian)`` with ``auxes`` the T passes' aux, a
        tuple in task order.

    Returns:
      A function ``(params, *args) -> (losses, jacobian)``; the Jacobian holds its rows (a
      :class:`StackedJacobian`: every method asks it for rows, Gramian or sums at no extra pass).

    Example::

      def task_loss(params, t, batches):   # task t has its own batch
          return loss(apply(params, batches[t]), t)

      losses, jac = mtlx.value_and_jacobian_per_task(task_loss, 3)(params, batches)
    """
    if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"num_tasks must be a positive int; got {num_tasks!r}.")

    def value_and_jacobian_fn(params: PyTree, *args: Any, **kwargs: Any):
        mask = shared_mask(params, shared)

        def total(copies: tuple[PyTree, ...]):
            results = [task_loss_fn(copy, t, *args, **kwargs) for t, copy in enumerate(copies)]
            if has_aux:
                if not all(isinstance(r, tuple) and len(r) == 2 for r in results):
                    raise ValueError(
                        "with has_aux=True, task_loss_fn must return (loss, aux) for every task."
                    )
                results, auxes = [r[0] for r in results], tuple(r[1] for r in results)
            else:
                auxes = None
            for t, loss in enumerate(results):
                if jnp.ndim(loss) != 0:
                    raise ValueError(
                        f"task_loss_fn must return task {t}'s loss as a scalar; got shape "
                        f"{jnp.shape(loss)}. Reduce over the batch inside task_loss_fn."
                    )
            losses = _check_losses(jnp.stack(results))
            return jnp.sum(losses), (losses, auxes)

        grads, (losses, auxes) = jax.grad(total, has_aux=True)((params,) * num_tasks)
        rows = jax.tree.map(lambda *g: jnp.stack(g), *grads)
        jac = StackedJacobian(rows, mask)
        return ((losses, auxes) if has_aux else losses), jac

    return value_and_jacobian_fn


def _compose_vjps(encoder_vjp, heads_vjp, cotangent):
    head_grads, feature_cotangent = heads_vjp(cotangent)
    (encoder_grads,) = encoder_vjp(feature_cotangent)
    return ({"encoder": encoder_grads, "heads": head_grads},)


def value_and_jacobian_through_features(
    encoder_fn: Callable[..., Any],
    heads_fn: Callable[..., Any],
    *,
    has_aux: bool = False,
    chunk_size: int | None = None,
    gramian: Literal["params", "features"] = "params",
) -> Callable[..., tuple[Any, Jacobian]]:
    r"""The Jacobian of ``heads(encoder(x))`` through the shared features.

    ``dL_t / d features`` comes from the heads' VJP (cheap), then the encoder, linearised once, is
    pulled back along those T feature cotangents by one batched VJP. Head parameters are
    task-specific (they get their own task's gradient); encoder parameters are shared.

    ``gramian="features"`` switches to a DIFFERENT, cheaper algorithm (not the same one faster):
    the returned :class:`~mtlx.FeatureJacobian`'s Gramian is the feature Gramian
    ``G_Z[s, t] = <dL_s/dZ, dL_t/dZ>`` (summed over the batch and feature axes; T head VJPs, no
    encoder backward pass), so a Gramian method computes its weights from the representation's
    geometry, not the encoder parameters', and its update ``combine(w)`` is ONE encoder backward
    pass of ``sum_t w_t L_t`` plus the heads' own gradients. That is MGDA-UB (Sener & Koltun,
    NeurIPS 2018) and LibMTL's ``rep_grad=True``, for every method that reads only the Gramian;
    the weights differ from the parameter-space ones in general. Row-reading methods still get the
    exact parameter-space rows (T encoder backward passes).

    Args:
      encoder_fn: ``encoder_fn(encoder_params, *args) -> features`` (any pytree).
      heads_fn: ``heads_fn(head_params, features, *args) -> (T,) losses`` (``(losses, aux)`` with
        ``has_aux``).
      has_aux: whether ``heads_fn`` also returns auxiliary data.
      chunk_size: as in :func:`value_and_jacobian`.
      gramian: ``"params"`` (the Gramian of the encoder-parameter gradients, a
        :class:`LinearizedJacobian`) or ``"features"`` (the feature Gramian, a
        :class:`~mtlx.FeatureJacobian`; see above).

    Returns:
      A function ``(params, *args) -> (losses, jacobian)`` with
      ``params = {"encoder": encoder_params, "heads": head_params}``.
    """
    if gramian not in ("params", "features"):
        raise ValueError(f"gramian must be 'params' or 'features'; got {gramian!r}.")

    def value_and_jacobian_fn(params: PyTree, *args: Any):
        if set(params) != {"encoder", "heads"}:
            raise ValueError(
                "value_and_jacobian_through_features takes params = {'encoder': ..., 'heads': ...}; "
                f"got keys {sorted(params)}."
            )
        features, encoder_vjp = jax.vjp(lambda p: encoder_fn(p, *args), params["encoder"])
        head_loss = lambda h, f: heads_fn(h, f, *args)  # noqa: E731
        if has_aux:
            losses, heads_vjp, aux = jax.vjp(head_loss, params["heads"], features, has_aux=True)
        else:
            losses, heads_vjp = jax.vjp(head_loss, params["heads"], features)
        losses = _check_losses(losses)
        treedef = jax.tree.structure(params)
        mask = shared_mask(
            params,
            {
                "encoder": jax.tree.map(lambda _: True, params["encoder"]),
                "heads": jax.tree.map(lambda _: False, params["heads"]),
            },
        )
        if gramian == "features":
            jac = FeatureJacobian(encoder_vjp, heads_vjp, losses, treedef, mask, chunk_size)
        else:
            vjp_fn = jax.tree_util.Partial(_compose_vjps, encoder_vjp, heads_vjp)
            jac = LinearizedJacobian(vjp_fn, losses, treedef, mask, chunk_size)
        return ((losses, aux) if has_aux else losses), jac

    return value_and_jacobian_fn


def jacobian_rows(jac: Jacobian | PyTree) -> PyTree:
    """The per-task gradients, every leaf ``(T, *leaf_shape)`` (materialises the Jacobian)."""
    return as_jacobian(jac).rows()
