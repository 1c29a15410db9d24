"""CAGrad: conflict-averse gradient descent (dual problem solved on the Gramian)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from mtlx._src import builders, linalg, solvers

_HIGHEST = jax.lax.Precision.HIGHEST
_RESCALES = (0, 1, 2)


def _matvec(matrix: jax.Array, vector: jax.Array) -> jax.Array:
    return jnp.matmul(matrix, vector, precision=_HIGHEST)


def _face_root(gramian, pull, support, radius):
    """On the face ``support`` of the simplex, the ``tau`` where ``radius * tau = ||g_w(tau)||``.

    There ``w(tau) = argmin ½ w^T G w + tau a^T w`` is affine, ``p + tau q`` (``p`` the face's
    min-norm point, ``q`` summing to 0, ``p^T G q = 0``), so ``||g_w||^2 = 1/gamma + tau^2 q^T G q``
    and the root is closed-form. ``inf`` when the face has none.
    """
    mask = support[:, None] & support[None, :]
    system = jnp.where(mask, gramian, 0.0) + jnp.diag(jnp.where(support, 0.0, 1.0))
    ones = jnp.where(support, 1.0, 0.0).astype(gramian.dtype)
    rhs = jnp.stack([ones, jnp.where(support, pull, 0.0)], axis=1)
    x = jnp.linalg.solve(system, rhs)
    gamma, beta = ones @ x[:, 0], ones @ x[:, 1]
    gamma = jnp.where(gamma > 0, gamma, jnp.inf)
    q = (beta / gamma) * x[:, 0] - x[:, 1]
    excess = radius**2 - q @ _matvec(gramian, q)
    ok = (excess > 0) & jnp.isfinite(gamma)
    return jnp.where(ok, jnp.sqrt(jnp.where(ok, 1.0 / (gamma * excess), 1.0)), jnp.inf)


def _min_norm_shifted(gramian, pull, g0_sq, tau, init, reg, max_iters):
    """``argmin_{w in simplex} ||g_w + tau g0||^2``: the min-norm point of the shifted rows.

    On the simplex ``||g_w + tau g0||^2 = w^T G w + 2 tau a^T w + const``: Wolfe's algorithm with
    the linear term ``tau a`` solves it exactly, warm-started from the previous ``tau``'s solution.
    """
    del g0_sq  # a constant on the simplex
    return solvers.min_norm_point(
        gramian, init, linear=tau * pull, max_iters=max_iters, reg_eps=reg
    )


def cagrad_dual(
    gramian: jax.Array,
    radius: jax.Array,
    *,
    max_iters: int = 50,
    qp_max_iters: int | None = None,
    reg_eps: float | None = None,
) -> jax.Array:
    r"""``argmin_{w in simplex} w^T G b + radius ||J^T w||`` (``b = 1/T``): CAGrad's dual problem.

    Written as ``min_{w, t > 0} w^T G b + radius (w^T G w / (2 t) + t / 2)``: for fixed ``t`` the
    minimiser ``w(tau)`` (``tau = t / radius``) is the min-norm point of the rows shifted by
    ``tau g0``, and the optimal ``tau`` is the root of ``radius tau = ||J^T w(tau)||``, which has
    one sign change (the reduced objective is convex in ``t``). The root is bracketed in
    ``[0, max_t ||g_t|| / radius]`` and found by steps to the exact root of the current face of
    the simplex, falling back to bisection: a few warm-started min-norm-point solves (Wolfe's
    algorithm, exact on rank-deficient Gramians too) when the face is right.

    Args:
      gramian: ``(T, T)`` Gramian, best normalized (trace 1).
      radius: ``c ||g0||`` (> 0).
      max_iters: bound on the outer (root-finding) iterations.
      qp_max_iters: bound on each inner min-norm-point solve (``None``: ``10 T + 10``).
      reg_eps: relative ridge on the shifted Gramian's corral systems (``None``: ``10 eps``).

    Returns:
      The ``(T,)`` minimiser ``w`` (on the simplex).
    """
    num_tasks = gramian.shape[0]
    dtype = gramian.dtype
    eps = jnp.finfo(dtype).eps
    reg = 10.0 * eps if reg_eps is None else reg_eps
    rtol = eps**0.75  # the QPs on ill-conditioned Gramians are exact to about this
    b = jnp.full((num_tasks,), 1.0 / num_tasks, dtype)
    pull = _matvec(gramian, b)  # a = G b: <g_t, g0>
    g0_sq = jnp.maximum(b @ pull, 0.0)
    radius = jnp.maximum(radius, jnp.finfo(dtype).tiny)
    max_norm = jnp.sqrt(jnp.maximum(jnp.max(jnp.diagonal(gramian)), 0.0))
    hi0 = 1.01 * max_norm / radius + jnp.finfo(dtype).tiny

    def step(carry):
        lo, hi, tau, w, _, it = carry
        w = _min_norm_shifted(gramian, pull, g0_sq, tau, w, reg, qp_max_iters)
        norm = jnp.sqrt(jnp.maximum(w @ _matvec(gramian, w), 0.0))
        gap = radius * tau - norm
        lo = jnp.where(gap < 0, tau, lo)
        hi = jnp.where(gap < 0, hi, tau)
        candidate = _face_root(gramian, pull, w > 0, radius)
        inside = (candidate > lo) & (candidate < hi)
        next_tau = jnp.where(inside, candidate, 0.5 * (lo + hi))
        # Done when tau is a root to rounding, or is its own face's root (the face is right).
        converged = (
            (jnp.abs(gap) <= rtol * (norm + radius * tau))
            | (jnp.abs(candidate - tau) <= rtol * tau)
            | (hi - lo <= eps * hi)
        )
        return lo, hi, next_tau, w, converged, it + 1

    def keep_going(carry):
        *_, converged, it = carry
        return (~converged) & (it < max_iters)

    tau0 = _face_root(gramian, pull, jnp.ones((num_tasks,), bool), radius)
    tau0 = jnp.where(tau0 < hi0, tau0, 0.5 * hi0)
    init = (jnp.zeros((), dtype), hi0, tau0, b, jnp.asarray(False), 0)
    *_, w, _, _ = jax.lax.while_loop(keep_going, step, init)
    return w


def cagrad_weights(
    gramian: jax.Array,
    c: jax.typing.ArrayLike = 0.5,
    *,
    rescale: int = 1,
    norm_eps: float = 1e-4,
    max_iters: int = 50,
) -> jax.Array:
    r"""CAGrad weights ``w`` (T,): ``J^T w`` is CAGrad's update.

    .. math:: w = \frac{1}{\rho}\Big(b + \frac{c \|g_0\|}{\|g_{w^*}\|}\, w^*\Big), \quad
       w^* = \arg\min_{w \in \Delta} g_w^\top g_0 + c \|g_0\| \|g_w\|, \quad b = \tfrac1T \mathbf 1

    with ``rho = 1`` (``rescale=0``), ``1 + c^2`` (``rescale=1``) or ``1 + c`` (``rescale=2``).
    The dual is solved on ``G / trace(G)`` by :func:`cagrad_dual` (exact up to rounding).

    Args:
      gramian: ``(T, T)`` Gramian ``G = J J^T``.
      c: the radius of the ball around ``g0`` relative to ``||g0||``.
      rescale: ``0``, ``1`` or ``2`` as above.
      norm_eps: the Gramian counts as zero below this trace, and ``w = 0`` when
        ``||g_{w*}|| < norm_eps ||J||_F`` (a Pareto-stationary point), as in TorchJD.
      max_iters: bound on the dual solver's outer iterations.

    Returns:
      ``(T,)`` weights.
    """
    if isinstance(rescale, bool) or rescale not in _RESCALES:
        raise ValueError(f"rescale must be 0, 1 or 2 (as in the CAGrad code); got {rescale!r}.")
    num_tasks = gramian.shape[0]
    g = linalg.normalize_gramian(gramian, norm_eps)
    dtype = g.dtype
    c = jnp.asarray(c, dtype)
    b = jnp.full((num_tasks,), 1.0 / num_tasks, dtype)
    radius = c * jnp.sqrt(jnp.maximum(b @ _matvec(g, b), 0.0))
    solvable = radius > 0
    w_star = cagrad_dual(g, jnp.where(solvable, radius, 1.0), max_iters=max_iters)
    w_norm = jnp.sqrt(jnp.maximum(w_star @ _matvec(g, w_star), 0.0))
    # radius = 0 (c = 0 or g0 = 0): the ball is the point g0, the update is the mean.
    step = jnp.where(solvable, radius / jnp.where(w_norm > 0, w_norm, 1.0), 0.0)
    weights = jnp.where(w_norm >= norm_eps, b + step * w_star, 0.0)
    weights = jnp.where(solvable, weights, jnp.where(jnp.trace(g) > 0, b, 0.0))
    rho = {0: 1.0, 1: 1.0 + c**2, 2: 1.0 + c}[rescale]
    return weights / rho


def cagrad(
    c: jax.typing.ArrayLike = 0.5,
    rescale: int = 1,
    norm_eps: float = 1e-4,
    max_iters: int = 50,
) -> optax.GradientTransformationExtraArgs:
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
    if isinstance(rescale, bool) or rescale not in _RESCALES:
        raise ValueError(f"rescale must be 0, 1 or 2 (as in the CAGrad code); got {rescale!r}.")
    if not isinstance(c, jax.core.Tracer) and jnp.ndim(c) == 0 and float(c) < 0:
        raise ValueError(f"c must be non-negative; got {c}.")

    def weights_fn(gramian, losses, state):
        del losses
        w = cagrad_weights(gramian, c, rescale=rescale, norm_eps=norm_eps, max_iters=max_iters)
        return w, state

    return builders.gramian_weighting(weights_fn, name="cagrad")
