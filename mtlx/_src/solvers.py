"""Pure-JAX solvers on T x T problems: bounded iterations, early exit, no host solver.

Every iterative solver is one :func:`bounded_while_loop`: a ``jax.lax.while_loop`` that stops when
the solver reports convergence or after ``max_iters`` steps, so its cost is bounded and usually far
below the bound, and it runs inside ``jax.jit``. Their tolerances are relative (a power of the
dtype's epsilon times the problem's scale) and named in :mod:`mtlx._src.tolerances`.

The weighting methods' problems: the min-norm point of the rows' convex hull (MGDA, CAGrad), the
non-negative QPs of the dual-cone projections (UPGrad, DualProj, PCD), CAGrad's dual, the Nash
bargaining solution (Nash-MTL) and the alpha-fair allocation (FairGrad). Simplex projections are
``optax.projections.projection_simplex``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import jax
import jax.numpy as jnp
import numpy as np

from mtlx._src import linalg, tolerances
from mtlx._src.jacobians import scale_gramian

Carry = TypeVar("Carry")
_HIGHEST = jax.lax.Precision.HIGHEST


def bounded_while_loop(
    step: Callable[[Carry], tuple[Carry, jax.Array]], init: Carry, max_iters: int
) -> Carry:
    """``carry, done = step(carry)`` until ``done`` or ``max_iters`` steps; the final carry.

    The one loop of the solvers: a ``jax.lax.while_loop`` whose carry holds the iteration count,
    so that a solver is bounded (its cost is known in advance) and exits early (it usually stops
    far below the bound). A fixed schedule is ``done = False``.
    """

    def body(loop):
        carry, _, it = loop
        carry, done = step(carry)
        return carry, jnp.asarray(done, bool), it + 1

    def keep_going(loop):
        _, done, it = loop
        return (~done) & (it < max_iters)

    carry, _, _ = jax.lax.while_loop(keep_going, body, (init, jnp.asarray(False), 0))
    return carry


def _matvec(matrix: jax.Array, vector: jax.Array) -> jax.Array:
    return jnp.matmul(matrix, vector, precision=_HIGHEST)


def _newton_tol(num_tasks: int, dtype) -> float:
    """The squared Newton decrement below which Newton's method has converged (see tolerances)."""
    return num_tasks * tolerances.eps(dtype) ** tolerances.NEWTON_TOL_POWER


def frank_wolfe_min_norm(
    gramian: jax.Array, *, epsilon: float = 1e-3, max_iters: int = 100
) -> jax.Array:
    r"""Min-norm point of the convex hull of the rows: ``argmin_{w in simplex} w^T G w``.

    Frank-Wolfe with exact line search, Algorithm 2 of Sener & Koltun (2018), as MGDA uses it:
    start from uniform weights, step toward the vertex ``argmin_t (G w)_t``, stop when the step
    size falls below ``epsilon`` or after ``max_iters`` steps.
    """
    num_tasks = gramian.shape[0]
    dtype = gramian.dtype

    def step(alpha):
        t = jnp.argmin(gramian @ alpha)
        e_t = jax.nn.one_hot(t, num_tasks, dtype=dtype)
        a = alpha @ gramian[:, t]
        b = alpha @ gramian @ alpha
        c = gramian[t, t]
        gamma = jnp.where(
            c <= a,
            1.0,
            jnp.where(b <= a, 0.0, (b - a) / jnp.where(b + c - 2 * a == 0, 1.0, b + c - 2 * a)),
        ).astype(dtype)
        return (1 - gamma) * alpha + gamma * e_t, ~(gamma >= epsilon)

    alpha0 = jnp.full((num_tasks,), 1.0 / num_tasks, dtype=dtype)
    return bounded_while_loop(step, alpha0, max_iters)


def _primal_dual_active_set(hessian, linear, solve_on, max_iters):
    """Hintermüller-Ito-Kunisch's primal-dual active-set guesses: fast, but may cycle."""

    def step(carry):
        free, _ = carry
        x = solve_on(free)
        multipliers = jnp.where(free, 0.0, hessian @ x + linear)
        new_free = ~(multipliers - x > 0)
        return (new_free, x), ~jnp.any(new_free != free)

    n = hessian.shape[0]
    init = (jnp.ones((n,), bool), jnp.zeros((n,), hessian.dtype))
    _, x = bounded_while_loop(step, init, max_iters)
    return jnp.maximum(x, 0.0)


def nonnegative_qp(
    hessian: jax.Array, linear: jax.Array, *, max_iters: int | None = None
) -> jax.Array:
    r"""``argmin_{x >= 0} 1/2 x^T H x + q^T x`` for positive definite ``H`` (T x T).

    Two stages. The primal-dual active-set method (Hintermüller, Ito & Kunisch, 2002) guesses the
    active set in a few iterations, but it can cycle on the QPs weighting methods pose. From its
    guess, Lawson & Hanson's primal active-set method (NNLS for a general positive definite ``H``)
    finishes: free the constraint whose multiplier ``(Hx + q)_i`` is most negative, solve on the free
    set, and when that leaves the feasible set step back to its boundary and re-fix the coordinates
    that hit zero. Its objective decreases monotonically, so it cannot cycle, and it ends at an exact
    KKT point; from a correct guess it stops after one solve. Each iteration is one masked T x T
    solve; ``max_iters`` bounds the second stage (default ``4 T + 8``, far above the ~T typical).
    """
    n = hessian.shape[0]
    dtype = hessian.dtype
    max_iters = 4 * n + 8 if max_iters is None else max_iters
    eye = jnp.eye(n, dtype=dtype)
    scale = jnp.max(jnp.abs(jnp.diagonal(hessian))) + jnp.max(jnp.abs(linear))
    tol = tolerances.QP_TOL_FACTOR * tolerances.eps(dtype) * jnp.where(scale > 0, scale, 1.0)

    def solve_on(free):
        masked = jnp.where(free[:, None] & free[None, :], hessian, 0.0)
        system = masked + jnp.where(free, 0.0, 1.0) * eye
        return jnp.where(free, jnp.linalg.solve(system, jnp.where(free, -linear, 0.0)), 0.0)

    def step(carry):
        x, free = carry
        z = solve_on(free)
        feasible = jnp.all(jnp.where(free, z > 0, True))
        # z feasible: accept it, then free the most violated constraint (or stop at optimality).
        multipliers = jnp.where(free, jnp.inf, hessian @ z + linear)
        entering = jnp.argmin(multipliers)
        optimal = multipliers[entering] >= -tol
        free_if_feasible = free | (jax.nn.one_hot(entering, n, dtype=bool) & ~optimal)
        # z infeasible: move toward it until the first free coordinate hits zero; fix those.
        blocking = free & (z <= 0)
        ratio = jnp.where(blocking, x / jnp.where(blocking, x - z, 1.0), jnp.inf)
        alpha = jnp.clip(jnp.min(ratio), 0.0, 1.0)
        x_partial = x + alpha * (z - x)
        free_if_infeasible = free & (x_partial > tol)
        x_next = jnp.where(feasible, z, jnp.where(free_if_infeasible, x_partial, 0.0))
        free_next = jnp.where(feasible, free_if_feasible, free_if_infeasible)
        return (x_next, free_next), feasible & optimal

    guess = _primal_dual_active_set(hessian, linear, solve_on, max_iters=n + 2)
    free = guess > tol
    x, _ = bounded_while_loop(step, (jnp.where(free, guess, 0.0), free), max_iters)
    return jnp.maximum(x, 0.0)


def project_weights_to_dual_cone(
    u: jax.Array, gramian: jax.Array, *, max_iters: int | None = None
) -> jax.Array:
    r"""Weights ``v`` with ``J^T v = pi_J(J^T u)``, the projection of ``J^T u`` onto the dual cone of J's rows.

    By Proposition 1 of Quinton & Rey (2024) it is the QP ``min_v v^T G v`` s.t. ``v >= u``,
    solved as ``v = u + x`` with ``x = argmin_{x >= 0} 1/2 x^T G x + (G u)^T x``. ``G`` must be
    positive definite (normalise and regularise it first). Works on a batch of ``u`` (``(..., T)``).
    """
    solve = lambda u_: u_ + nonnegative_qp(gramian, gramian @ u_, max_iters=max_iters)  # noqa: E731
    for _ in range(u.ndim - 1):
        solve = jax.vmap(solve)
    return solve(u)


def dual_cone_weights(
    u: jax.Array,
    gramian: jax.Array,
    *,
    norm_eps: float = tolerances.GRAMIAN_NORM_EPS,
    reg_eps: float = tolerances.GRAMIAN_REG_EPS,
    max_iters: int | None = None,
    exact: bool = False,
) -> jax.Array:
    """:func:`project_weights_to_dual_cone` on ``G / trace(G) + reg_eps I``, as TorchJD's projector.

    The trace normalization makes the weights scale-free; the ridge makes ``G`` positive definite
    despite rounding (a zero Gramian, trace below ``norm_eps``, becomes ``reg_eps I``). The ridge
    moves the result by about ``reg_eps`` relative to the largest row: a row ``1e4`` times smaller
    than the largest is all but ignored.

    ``exact=True`` uses instead that the dual cone ``{x : J x >= 0}`` does not change when the rows
    are scaled: with ``D = diag(1 / ||g_t||)`` it projects ``J^T u = (D J)^T (D^{-1} u)`` onto the
    cone of the unit rows, on the cosine matrix ``D G D`` with a ridge of a few ``eps`` (no
    ``norm_eps``, no ``reg_eps``), and returns ``D v'``. Rows of any relative size then count
    alike, and ``<J^T v, g_t> >= 0`` holds to rounding; zero rows (``linalg.nonzero_rows``) get
    weight 0.
    """
    u = jnp.asarray(u)
    if not exact:
        g = linalg.regularize_gramian(linalg.normalize_gramian(gramian, norm_eps), reg_eps)
        return project_weights_to_dual_cone(u.astype(g.dtype), g, max_iters=max_iters)
    inv_norms = linalg.inverse_norms(gramian)
    nonzero = inv_norms > 0
    cosines = scale_gramian(gramian, inv_norms)
    # Zero rows: an identity block keeps the system positive definite; their weights are 0.
    ridge = tolerances.EXACT_CONE_RIDGE_FACTOR * tolerances.eps(gramian.dtype)
    cosines = cosines + jnp.diag(jnp.where(nonzero, ridge, 1.0)).astype(gramian.dtype)
    norms = linalg.norms_from_gramian(gramian)
    scaled_u = jnp.where(nonzero, u.astype(gramian.dtype) * norms, 0.0)
    projected = project_weights_to_dual_cone(scaled_u, cosines, max_iters=max_iters)
    return projected * inv_norms


def min_norm_point(
    gramian: jax.Array,
    init: jax.Array | None = None,
    *,
    linear: jax.Array | None = None,
    max_iters: int | None = None,
    reg_eps: float | None = None,
    row_tolerance: bool = False,
) -> jax.Array:
    r"""Exact ``argmin_{w in simplex} ½ w^T G w + q^T w``: Wolfe's minimum-norm-point algorithm.

    Wolfe (1976): keep a corral ``S`` of affinely independent points; a major step adds the point
    ``argmin_t (G w)_t`` that most violates optimality, minor steps move to the affine min-norm
    point of ``S`` and drop the points that leave the simplex on the way. Finite in exact
    arithmetic, robust on rank-deficient ``G`` (where the non-negative QP route is unbounded), and
    it stops when ``min_t (G w + q)_t >= w^T (G w + q)`` to rounding. ``q = linear`` (default 0)
    is the min-norm point of the rows shifted by ``y`` with ``q = J y``, solved without forming the
    shifted Gramian (whose entries would swamp small rows in float32). ``init`` (on the simplex)
    warm-starts it with ``S = {w > 0}``; ``max_iters`` defaults to ``10 T + 10``.

    ``row_tolerance=True`` (``q = 0`` only) tests optimality row by row at the precision each row
    allows, ``(G w)_t >= w^T G w - c eps ||g_t|| sum_s w_s ||g_s||``, and enters the row with the
    largest violation relative to its norm: rows whose norms are orders of magnitude apart then
    all end non-conflicting (``<d, g_t> >= 0`` to rounding), where the default tolerance, relative
    to the largest diagonal entry, stops as soon as the small rows' products are within it.
    """
    n = gramian.shape[0]
    dtype = gramian.dtype
    eps = tolerances.eps(dtype)
    max_iters = 10 * n + 10 if max_iters is None else max_iters
    scale = jnp.maximum(jnp.max(jnp.abs(jnp.diagonal(gramian))), jnp.finfo(dtype).tiny)
    reg = (tolerances.MIN_NORM_RIDGE_FACTOR * eps if reg_eps is None else reg_eps) * scale
    if row_tolerance:  # each row's own scale: a ridge relative to the largest swamps small rows
        diagonal = jnp.maximum(jnp.diagonal(gramian), jnp.finfo(dtype).tiny)
        reg = (tolerances.MIN_NORM_RIDGE_FACTOR * eps if reg_eps is None else reg_eps) * diagonal
    tol = tolerances.MIN_NORM_TOL_FACTOR * n * eps * scale
    eye = jnp.eye(n, dtype=dtype)
    linear = jnp.zeros((n,), dtype) if linear is None else linear.astype(dtype)

    def affine_min_norm(corral):
        # [G_SS + reg I, 1; 1^T, 0] [v; -lambda] = [-q_S; 1], identity rows off the corral, with a
        # Jacobi scaling of G_SS (v = S y): the norms of the points may span orders of magnitude.
        both = corral[:, None] & corral[None, :]
        block = jnp.where(both, gramian + reg * eye, 0.0) + jnp.where(corral, 0.0, 1.0) * eye
        scale = jax.lax.rsqrt(jnp.maximum(jnp.diagonal(block), jnp.finfo(dtype).tiny))
        block = scale_gramian(block, scale)
        ones = jnp.where(corral, scale, 0.0).astype(dtype)
        system = jnp.block([[block, ones[:, None]], [ones[None, :], jnp.zeros((1, 1), dtype)]])
        rhs = jnp.concatenate([jnp.where(corral, -scale * linear, 0.0), jnp.ones((1,), dtype)])
        return jnp.where(corral, scale * jnp.linalg.solve(system, rhs)[:n], 0.0)

    row_norms = linalg.norms_from_gramian(gramian)

    def step(carry):
        w, corral, pending = carry
        products = _matvec(gramian, w) + linear
        if row_tolerance:
            gaps = products - w @ products
            row_tol = tolerances.MIN_NORM_TOL_FACTOR * n * eps * row_norms * (w @ row_norms)
            tiny = jnp.finfo(dtype).tiny
            j = jnp.argmin(gaps / jnp.maximum(row_norms, tiny))
            optimal = (~pending) & jnp.all(gaps >= -row_tol)
        else:
            j = jnp.argmin(products)
            optimal = (~pending) & (products[j] >= w @ products - tol)
        corral = jnp.where(pending, corral, corral.at[j].set(True))
        v = affine_min_norm(corral)
        interior = jnp.all(jnp.where(corral, v > 0, True))
        # Minor step: the largest move toward v that keeps w >= 0, then drop the zeroed points.
        leaving = corral & (v <= 0)
        ratios = jnp.where(leaving, w / jnp.where(leaving, w - v, 1.0), jnp.inf)
        theta = jnp.clip(jnp.min(ratios), 0.0, 1.0)
        moved = jnp.maximum(w + theta * (v - w), 0.0)
        moved_corral = corral & (moved > eps * jnp.max(moved))
        moved = jnp.where(moved_corral, moved, 0.0)
        moved = moved / jnp.sum(moved)
        new_w = jnp.where(interior, v, moved)
        new_corral = jnp.where(interior, corral, moved_corral)
        w = jnp.where(optimal, w, new_w)
        corral = jnp.where(optimal, corral, new_corral)
        return (w, corral, (~interior) & (~optimal)), optimal

    if init is None:
        w0 = jax.nn.one_hot(jnp.argmin(jnp.diagonal(gramian)), n, dtype=dtype)
        pending0 = False
    else:
        w0 = init.astype(dtype)
        pending0 = True  # re-solve on the warm corral before looking for a new point
    w, _, _ = bounded_while_loop(step, (w0, w0 > 0, jnp.asarray(pending0)), max_iters)
    return w


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
    ``tau g0`` (on the simplex ``||g_w + tau g0||^2 = w^T G w + 2 tau a^T w + const``, ``a = G b``:
    :func:`min_norm_point` with the linear term ``tau a``, warm-started from the previous ``tau``'s
    solution), and the optimal ``tau`` is the root of ``radius tau = ||J^T w(tau)||``, which has
    one sign change (the reduced objective is convex in ``t``). The root is bracketed in
    ``[0, max_t ||g_t|| / radius]`` and found by steps to the exact root of the current face of
    the simplex, falling back to bisection: a few warm-started min-norm-point solves (Wolfe's
    algorithm, exact on rank-deficient Gramians too) when the face is right.

    Args:
      gramian: ``(T, T)`` Gramian, best normalized (trace 1).
      radius: ``c ||g0||`` (> 0).
      max_iters: bound on the outer (root-finding) iterations.
      qp_max_iters: bound on each inner min-norm-point solve (``None``: ``10 T + 10``).
      reg_eps: relative ridge on the shifted Gramian's corral systems (``None``: min-norm point's).

    Returns:
      The ``(T,)`` minimiser ``w`` (on the simplex).
    """
    num_tasks = gramian.shape[0]
    dtype = gramian.dtype
    eps = tolerances.eps(dtype)
    rtol = eps**tolerances.ROOT_RTOL_POWER
    b = jnp.full((num_tasks,), 1.0 / num_tasks, dtype)
    pull = _matvec(gramian, b)  # a = G b: <g_t, g0>
    radius = jnp.maximum(radius, jnp.finfo(dtype).tiny)
    max_norm = jnp.sqrt(jnp.maximum(jnp.max(jnp.diagonal(gramian)), 0.0))
    hi0 = 1.01 * max_norm / radius + jnp.finfo(dtype).tiny

    def step(carry):
        lo, hi, tau, w = carry
        w = min_norm_point(gramian, w, linear=tau * pull, max_iters=qp_max_iters, reg_eps=reg_eps)
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
        return (lo, hi, next_tau, w), converged

    tau0 = _face_root(gramian, pull, jnp.ones((num_tasks,), bool), radius)
    tau0 = jnp.where(tau0 < hi0, tau0, 0.5 * hi0)
    *_, w = bounded_while_loop(step, (jnp.zeros((), dtype), hi0, tau0, b), max_iters)
    return w


def nash_bargaining(
    gramian: jax.Array, *, max_iters: int = 20, reg_eps: jax.typing.ArrayLike = 1e-8
) -> jax.Array:
    r"""The Nash bargaining weights: the :math:`\alpha > 0` with :math:`G \alpha = 1 / \alpha`.

    That is the minimizer of the strictly convex, self-concordant
    :math:`f(\alpha) = \tfrac12 \alpha^\top G \alpha - \sum_t \log \alpha_t`, found by damped
    Newton steps (Nesterov & Nemirovski) in the scaled variables :math:`\alpha \circ u`: each step
    solves :math:`(D G D + I) u = 1 - \alpha \circ G\alpha` with :math:`D = \mathrm{diag}(\alpha)`,
    a system whose eigenvalues are all :math:`\ge 1`, and moves by :math:`u / (1 + \lambda)` (a
    step that keeps :math:`\alpha > 0`) until the squared Newton decrement :math:`\lambda^2` is at
    rounding level (see :mod:`mtlx._src.tolerances`), or ``max_iters`` steps. It runs on the cosine
    matrix (:math:`\alpha_t = \beta_t / \|g_t\|`, :math:`C \beta = 1 / \beta`: scale-free per task),
    regularized by ``max(reg_eps, 16 eps) I`` (eps of the dtype: a smaller ridge vanishes in
    rounding) so that duplicate or opposite rows give finite weights; a zero row gets weight 0.
    The start :math:`\beta \propto 1` is exact for orthogonal rows.
    """
    num_tasks = gramian.shape[0]
    dtype = gramian.dtype
    eye = jnp.eye(num_tasks, dtype=dtype)
    inv_norms = linalg.inverse_norms(gramian)
    ridge = jnp.maximum(
        jnp.asarray(reg_eps, dtype), tolerances.NASH_RIDGE_FACTOR * tolerances.eps(dtype)
    )
    c = scale_gramian(gramian, inv_norms) + ridge * eye
    # beta = s 1 with the s that minimizes f along that ray: exact for orthogonal rows.
    beta0 = jnp.full((num_tasks,), 1.0, dtype) * jnp.sqrt(num_tasks / jnp.sum(c))
    tol = _newton_tol(num_tasks, dtype)

    def step(beta):
        residual = 1.0 - beta * (c @ beta)
        u = jnp.linalg.solve(scale_gramian(c, beta) + eye, residual)
        sq_decrement = jnp.maximum(u @ residual, 0.0)
        return beta * (1.0 + u / (1.0 + jnp.sqrt(sq_decrement))), ~(sq_decrement > tol)

    return inv_norms * bounded_while_loop(step, beta0, max_iters)


# Step sizes tried at once by FairGrad's vectorised backtracking line search (1, 1/2, ..., 2^-29).
_LINE_SEARCH_STEPS = 0.5 ** np.arange(30)


def alpha_fair_root(
    matrix: jax.Array, alpha: jax.Array, *, max_iters: int = 100, tol: float | None = None
) -> jax.Array:
    r"""The positive root of ``M w = w^{-1/alpha}`` (element-wise power), ``M`` positive definite.

    The root is the minimiser of the strictly convex ``F(w) = ½ w^T M w + sum_t phi(w_t)`` with
    ``phi'(w) = -w^{-1/alpha}`` (``-log w`` for ``alpha = 1``), found by damped Newton steps
    (``H = M + diag(w^{-1/alpha - 1} / alpha)`` is positive definite) with a vectorised backtracking
    line search that keeps ``w > 0``, from the root for the diagonal of ``M``; it stops when the
    squared Newton decrement is below ``tol`` (``None``: rounding level, see
    :mod:`mtlx._src.tolerances`). FairGrad's weights (alpha-fair allocation).
    """
    num_tasks = matrix.shape[0]
    dtype = matrix.dtype
    tol = _newton_tol(num_tasks, dtype) if tol is None else tol
    exponent = 1.0 - 1.0 / alpha  # phi(w) = -w^exponent / exponent, -log w at exponent 0

    def phi(w):
        log_w = jnp.log(w)
        small = jnp.abs(exponent) < 1e-12
        safe = jnp.where(small, 1.0, exponent)
        return jnp.where(small, -log_w, -jnp.expm1(safe * log_w) / safe)

    def objective(w):
        return 0.5 * w @ _matvec(matrix, w) + jnp.sum(phi(w))

    def newton(w):
        power = w ** (-1.0 / alpha)
        grad = _matvec(matrix, w) - power
        hessian = matrix + jnp.diag(power / (alpha * w))
        # Jacobi-scaled solve: the diagonal spans the squared spread of the row norms, which a
        # plain float32 LU would not resolve.
        scale = jax.lax.rsqrt(jnp.diagonal(hessian))
        direction = -scale * jnp.linalg.solve(scale_gramian(hessian, scale), scale * grad)
        decrement = -grad @ direction
        # Largest step keeping w > 0 (stop 1% short of the boundary), then Armijo backtracking.
        ratio = jnp.where(direction < 0, -w / jnp.where(direction < 0, direction, -1.0), jnp.inf)
        cap = jnp.minimum(1.0, 0.99 * jnp.min(ratio))
        steps = cap * _LINE_SEARCH_STEPS.astype(dtype)
        candidates = w[None, :] + steps[:, None] * direction[None, :]
        values = jax.vmap(objective)(jnp.maximum(candidates, jnp.finfo(dtype).tiny))
        armijo = values <= objective(w) - 0.25 * steps * decrement
        chosen = jnp.argmax(armijo)  # the largest acceptable step; the smallest if none is
        step = jnp.where(jnp.any(armijo), steps[chosen], steps[-1])
        new_w = w + step * direction
        # Rounding can still break a near-singular solve: keep the last finite iterate and stop.
        finite = jnp.all(jnp.isfinite(new_w)) & jnp.all(new_w > 0)
        return jnp.where(finite, new_w, w), ~(jnp.where(finite, decrement, 0.0) > tol)

    w0 = jnp.diagonal(matrix) ** (-alpha / (1.0 + alpha))
    return bounded_while_loop(newton, w0, max_iters)
