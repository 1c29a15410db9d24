"""CAGrad: conflict-averse gradient descent (dual problem solved on the Gramian)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtlx._src import checks, linalg, solvers, tolerances
from mtlx._src.weighting import Stats, Weighting, WeightingTransformation, as_transform

_HIGHEST = jax.lax.Precision.HIGHEST
_RESCALES = (0, 1, 2)


def _matvec(matrix: jax.Array, vector: jax.Array) -> jax.Array:
    return jnp.matmul(matrix, vector, precision=_HIGHEST)


def _check_rescale(rescale: int | jax.Array) -> None:
    # A traced rescale (optax.inject_hyperparams) is checked when the method is built untraced.
    if checks.is_traced(rescale):
        return
    if isinstance(rescale, bool) or np.ndim(rescale) != 0 or int(rescale) != rescale:
        raise ValueError(f"rescale must be 0, 1 or 2 (as in the CAGrad code); got {rescale!r}.")
    if int(rescale) not in _RESCALES:
        raise ValueError(f"rescale must be 0, 1 or 2 (as in the CAGrad code); got {rescale!r}.")


def cagrad_weights(
    gramian: jax.Array,
    c: jax.typing.ArrayLike = 0.5,
    *,
    rescale: int = 1,
    norm_eps: float = tolerances.GRAMIAN_NORM_EPS,
    max_iters: int = 50,
) -> jax.Array:
    r"""CAGrad weights ``w`` (T,): ``J^T w`` is CAGrad's update.

    .. math:: w = \frac{1}{\rho}\Big(b + \frac{c \|g_0\|}{\|g_{w^*}\|}\, w^*\Big), \quad
       w^* = \arg\min_{w \in \Delta} g_w^\top g_0 + c \|g_0\| \|g_w\|, \quad b = \tfrac1T \mathbf 1

    with ``rho = 1`` (``rescale=0``), ``1 + c^2`` (``rescale=1``) or ``1 + c`` (``rescale=2``).
    The dual is solved on ``G / trace(G)`` by ``solvers.cagrad_dual`` (exact up to rounding).

    Args:
      gramian: ``(T, T)`` Gramian ``G = J J^T``.
      c: the radius of the ball around ``g0`` relative to ``||g0||``.
      rescale: ``0``, ``1`` or ``2`` as above (may be traced).
      norm_eps: the Gramian counts as zero below this trace, and ``w = 0`` when
        ``||g_{w*}|| < norm_eps ||J||_F`` (a Pareto-stationary point), as in TorchJD.
      max_iters: bound on the dual solver's outer iterations.

    Returns:
      ``(T,)`` weights.
    """
    _check_rescale(rescale)
    num_tasks = gramian.shape[0]
    g = linalg.normalize_gramian(gramian, norm_eps)
    dtype = g.dtype
    c = jnp.asarray(c, dtype)
    b = jnp.full((num_tasks,), 1.0 / num_tasks, dtype)
    radius = c * jnp.sqrt(jnp.maximum(b @ _matvec(g, b), 0.0))
    solvable = radius > 0
    w_star = solvers.cagrad_dual(g, jnp.where(solvable, radius, 1.0), max_iters=max_iters)
    w_norm = jnp.sqrt(jnp.maximum(w_star @ _matvec(g, w_star), 0.0))
    # radius = 0 (c = 0 or g0 = 0): the ball is the point g0, the update is the mean.
    step = jnp.where(solvable, radius / jnp.where(w_norm > 0, w_norm, 1.0), 0.0)
    weights = jnp.where(w_norm >= norm_eps, b + step * w_star, 0.0)
    weights = jnp.where(solvable, weights, jnp.where(jnp.trace(g) > 0, b, 0.0))
    # Indexed, not looked up in a dict: rescale may be traced (optax.inject_hyperparams).
    rho = jnp.stack([jnp.ones_like(c), 1.0 + c**2, 1.0 + c])[rescale]
    return weights / rho


def cagrad(
    c: jax.typing.ArrayLike = 0.5,
    rescale: int = 1,
    norm_eps: float = tolerances.GRAMIAN_NORM_EPS,
    max_iters: int = 50,
) -> WeightingTransformation:
    r"""Conflict-averse gradient descent (CAGrad), Algorithm 1 of Liu et al. (NeurIPS 2021).

    .. math:: d^* = \arg\max_{\|d - g_0\| \le c \|g_0\|}\ \min_t\ g_t^\top d
       \;=\; g_0 + \frac{c\|g_0\|}{\|g_{w^*}\|} g_{w^*}, \qquad \text{update} = d^* / \rho

    ``g0`` is the mean gradient; ``w*`` solves the dual ``min_{w in simplex} g_w^T g_0 +
    c ||g_0|| ||g_w||``, which lives on the T x T Gramian and is solved exactly in pure JAX (root of
    a scalar equation over exact min-norm-point problems, bounded and early-exiting).

    Args:
      c: radius of the ball around ``g0``, relative to ``||g0||`` (``calpha`` in LibMTL and the
        official code; TorchJD's ``c``). ``c = 0`` gives the mean.
      rescale: ``1`` (default) divides the update by ``1 + c^2`` as the official code and LibMTL
        do by default; ``0`` does not rescale (TorchJD's ``CAGrad(c)``); ``2`` divides by ``1 + c``.
      norm_eps: the Gramian counts as zero when its trace is below this, and the update is zero
        when ``||g_{w*}|| < norm_eps ||J||_F`` (0 in the rows' convex hull: Pareto-stationary), as
        TorchJD's ``norm_eps``.
      max_iters: bound on the dual solver's outer iterations (each an exact active-set QP).

    Static under ``optax.inject_hyperparams`` (``static_args``): ``max_iters``; every other
    numeric argument may be injected.

    Returns:
      A transformation from task-stacked updates (each leaf ``(T, *shape)``) to one update. Takes an
      optional precomputed ``gramian=`` extra arg and ignores the others (e.g. ``task_losses``).

    Properties: permutation-invariant, positively homogeneous (above ``norm_eps``), equal to the
      mean divided by ``rho`` when ``c = 0``; stateless; no task losses.

    .. warning::
      The default ``rescale=1`` follows the official implementation and LibMTL
      (``CAGrad(calpha=0.5, rescale=1)``); TorchJD's ``CAGrad(c)`` is ``rescale=0``. The two differ
      by the factor ``1 + c^2`` only. LibMTL's and the official code also add ``1e-8`` to norms and
      solve the dual with SLSQP; TorchJD solves it with CLARABEL on the trace-normalized Gramian,
      as here. At a Pareto-stationary point (``g_{w*} = 0``) the update is zero, as in TorchJD.

    References:
      Liu et al., `Conflict-Averse Gradient Descent for Multi-task Learning
      <https://arxiv.org/abs/2110.14048>`_, NeurIPS 2021.
    """
    _check_rescale(rescale)
    checks.nonnegative("c", c)

    def weights(stats: Stats, state: optax.EmptyState) -> tuple[jax.Array, optax.EmptyState]:
        w = cagrad_weights(
            stats.gramian, c, rescale=rescale, norm_eps=norm_eps, max_iters=max_iters
        )
        return w, state

    return as_transform(Weighting("cagrad", weights, reads="gramian"))
