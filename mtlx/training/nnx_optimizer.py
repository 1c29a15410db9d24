"""Flax NNX's stateful route: the Jacobian of a model in place, and an ``nnx.Optimizer`` for it.

``nnx.Optimizer.update(model, grads)`` keeps only the ``nnx.State`` in ``grads``: an mtlx Jacobian
(which holds the VJP and the shared mask, not a state) is filtered away ("the Jacobian pytree has
no leaves"), and passing its rows instead loses the shared mask, so task heads enter the Gramian.
:class:`MultiTaskOptimizer` is an ``nnx.Optimizer`` that hands the Jacobian to the optax chain as
it is, and :func:`model_value_and_jacobian` computes it for an ``nnx.Module`` whose non-parameter
state (BatchNorm statistics, dropout RNG counts) the forward pass updates::

  model = MyModel(rngs=nnx.Rngs(0))                     # returns T outputs; heads under `heads`
  optimizer = MultiTaskOptimizer(model, optax.chain(mtlx.upgrad(), optax.adam(1e-3)))

  @nnx.jit
  def step(model, optimizer, batch):
      losses, jac = model_value_and_jacobian(task_losses_fn, model, batch)
      optimizer.update(model, jac, task_losses=losses)
      return losses

``task_losses_fn(model, batch) -> (T,)``; parameters under ``heads`` (or ``task_specific``) are
task-specific by default (:func:`mtlx.models.is_shared`), any predicate may be given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optax
from flax import nnx

import mtlx
from mtlx import models
from mtlx.jacobian import Jacobian

__all__ = ["MultiTaskOptimizer", "model_value_and_jacobian"]


def model_value_and_jacobian(
    loss_fn: Callable[..., Any],
    model: nnx.Module,
    *args: Any,
    shared: Any = None,
    wrt: Any = nnx.Param,
    chunk_size: int | None = None,
) -> tuple[Any, Jacobian]:
    """``(losses, jacobian)`` of ``loss_fn(model, *args) -> (T,)`` over the model's ``wrt`` state.

    The model is split into its ``wrt`` parameters and the rest (``nnx.as_pure``, so it runs inside
    ``nnx.jit`` and ``jax.jit``); the forward pass's changes to the rest (BatchNorm running
    statistics, RNG counts for dropout) are written back to ``model``, as ``nnx.grad`` would.

    Args:
      loss_fn: ``loss_fn(model, *args)`` returning the ``(T,)`` task losses.
      model: the ``nnx.Module``; switch it to ``model.train()`` / ``model.eval()`` as usual.
      *args: passed to ``loss_fn`` (the batch).
      shared: which parameters are shared (a predicate ``(path, leaf) -> bool`` or a bool pytree
        of the ``wrt`` state); default :func:`mtlx.models.is_shared` (all but ``heads`` and
        ``task_specific``).
      wrt: the filter of the trained parameters (as ``nnx.Optimizer``'s ``wrt``).
      chunk_size: see :func:`mtlx.value_and_jacobian`.

    Returns:
      ``(losses, jacobian)``: hand the Jacobian to :meth:`MultiTaskOptimizer.update` (or to an
      optax chain with the ``wrt`` state as ``params``).
    """
    graphdef, params, rest = nnx.split(model, wrt, ...)
    params, rest = nnx.as_pure(params), nnx.as_pure(rest)

    def pure_loss(p, rest, *args):
        module = nnx.merge(graphdef, p, rest)
        losses = loss_fn(module, *args)
        return losses, nnx.as_pure(nnx.state(module, nnx.Not(wrt)))

    engine = mtlx.value_and_jacobian(
        pure_loss,
        shared=models.is_shared if shared is None else shared,
        has_aux=True,
        chunk_size=chunk_size,
    )
    (losses, new_rest), jac = engine(params, rest, *args)
    nnx.update(model, new_rest)
    return losses, jac


class MultiTaskOptimizer(nnx.Optimizer):
    """``nnx.Optimizer`` whose ``update`` takes an mtlx Jacobian (with its shared mask) as it is.

    Build it as ``nnx.Optimizer``: ``MultiTaskOptimizer(model, tx, wrt=nnx.Param)``, with ``tx``
    an optax chain that starts with an mtlx method (``optax.chain(mtlx.mgda(), optax.adam(1e-3))``).
    ``update(model, jac, task_losses=losses)`` runs ``tx.update(jac, opt_state, params, ...)``,
    applies the updates to the model and counts the step. Plain gradients (an ``nnx.State``) go
    through ``nnx.Optimizer.update`` unchanged.
    """

    def update(self, model: nnx.Module, grads: Any, /, **kwargs: Any) -> optax.Updates:
        """Applies one step of ``tx`` with the Jacobian ``grads``; returns the updates."""
        if not isinstance(grads, Jacobian):
            return super().update(model, grads, **kwargs)
        params = nnx.as_pure(nnx.state(model, self.wrt, graph=self.graph))
        opt_state = nnx.as_pure(self.opt_state)
        updates, new_opt_state = self.tx.update(grads, opt_state, params, **nnx.as_pure(kwargs))
        nnx.update(model, optax.apply_updates(params, updates))
        nnx.update(self.opt_state, nnx.state(new_opt_state, graph=self.graph))
        self.step[...] += 1
        return updates
