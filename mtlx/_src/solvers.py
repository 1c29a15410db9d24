"""Pure-JAX solvers on T x T problems: bounded iterations, early exit, no host solver.

Each solver runs inside ``jax.jit`` with a ``jax.lax.while_loop`` that stops at convergence or at
``max_iters``, so its cost is bounded and usually far below the bound.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def project_to_simplex(v: jax.Array) -> jax.Array:
    """Euclidean projection of ``v`` onto the probability simplex (sort-based, exact)."""
    n = v.shape[-1]
    u = jnp.sort(v)[::-1]
    css = jnp.cumsum(u) - 1.0
    index = jnp.arange(1, n + 1, dtype=v.dtype)
    cond = u - css / index > 0
    rho = jnp.max(jnp.where(cond, jnp.arange(n), 0))
    theta = css[rho] / (rho + 1).astype(v.dtype)
    return jnp.maximum(v - theta, 0.0)


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

    def step(carry):
        alpha, _, it = carry
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
        return (1 - gamma) * alpha + gamma * e_t, gamma, it + 1

    def keep_going(carry):
        _, gamma, it = carry
        return (it < max_iters) & (gamma >= epsilon)

    alpha0 = jnp.full((num_tasks,), 1.0 / num_tasks, dtype=dtype)
    alpha, _, _ = jax.lax.while_loop(keep_going, step, (alpha0, jnp.asarray(jnp.inf, dtype), 0))
    return alpha


def _primal_dual_active_set(hessian, linear, solve_on, max_iters):
    """Hintermüller-Ito-Kunisch's primal-dual active-set guesses: fast, but may cycle."""

    def step(carry):
        free, _, it, _ = carry
        x = solve_on(free)
        multipliers = jnp.where(free, 0.0, hessian @ x + linear)
        new_free = ~(multipliers - x > 0)
        return new_free, x, it + 1, jnp.any(new_free != free)

    def keep_going(carry):
        _, _, it, changed = carry
        return changed & (it < max_iters)

    n = hessian.shape[0]
    init = (jnp.ones((n,), bool), jnp.zeros((n,), hessian.dtype), 0, jnp.asarray(True))
    _, x, _, _ = jax.lax.while_loop(keep_going, step, init)
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
    tol = 64 * jnp.finfo(dtype).eps * jnp.where(scale > 0, scale, 1.0)

    def solve_on(free):
        masked = jnp.where(free[:, None] & free[None, :], hessian, 0.0)
        system = masked + jnp.where(free, 0.0, 1.0) * eye
        return jnp.where(free, jnp.linalg.solve(system, jnp.where(free, -linear, 0.0)), 0.0)

    def step(carry):
        x, free, it, _ = carry
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
        done = feasible & optimal
        return x_next, free_next, it + 1, done

    def keep_going(carry):
        _, _, it, done = carry
        return ~done & (it < max_iters)

    guess = _primal_dual_active_set(hessian, linear, solve_on, max_iters=n + 2)
    free = guess > tol
    init = (jnp.where(free, guess, 0.0), free, 0, jnp.asarray(False))
    x, _, _, _ = jax.lax.while_loop(keep_going, step, init)
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


def min_norm_point(
    gramian: jax.Array,
    init: jax.Array | None = None,
    *,
    linear: jax.Array | None = None,
    max_iters: int | None = None,
    reg_eps: float | None = None,
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
    """
    n = gramian.shape[0]
    dtype = gramian.dtype
    eps = jnp.finfo(dtype).eps
    max_iters = 10 * n + 10 if max_iters is None else max_iters
    scale = jnp.maximum(jnp.max(jnp.abs(jnp.diagonal(gramian))), jnp.finfo(dtype).tiny)
    reg = (10.0 * eps if reg_eps is None else reg_eps) * scale
    tol = 10.0 * n * eps * scale
    eye = jnp.eye(n, dtype=dtype)
    linear = jnp.zeros((n,), dtype) if linear is None else linear.astype(dtype)

    def affine_min_norm(corral):
        # [G_SS + reg I, 1; 1^T, 0] [v; -lambda] = [-q_S; 1], identity rows off the corral, with a
        # Jacobi scaling of G_SS (v = S y): the norms of the points may span orders of magnitude.
        both = corral[:, None] & corral[None, :]
        block = jnp.where(both, gramian + reg * eye, 0.0) + jnp.where(corral, 0.0, 1.0) * eye
        scale = jax.lax.rsqrt(jnp.maximum(jnp.diagonal(block), jnp.finfo(dtype).tiny))
        block = block * jnp.outer(scale, scale)
        ones = jnp.where(corral, scale, 0.0).astype(dtype)
        system = jnp.block([[block, ones[:, None]], [ones[None, :], jnp.zeros((1, 1), dtype)]])
        rhs = jnp.concatenate([jnp.where(corral, -scale * linear, 0.0), jnp.ones((1,), dtype)])
        return jnp.where(corral, scale * jnp.linalg.solve(system, rhs)[:n], 0.0)

    def step(carry):
        w, corral, pending, _, it = carry
        products = jnp.matmul(gramian, w, precision=jax.lax.Precision.HIGHEST) + linear
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
        return w, corral, (~interior) & (~optimal), optimal, it + 1

    def keep_going(carry):
        *_, done, it = carry
        return (~done) & (it < max_iters)

    if init is None:
        w0 = jax.nn.one_hot(jnp.argmin(jnp.diagonal(gramian)), n, dtype=dtype)
        pending0 = False
    else:
        w0 = init.astype(dtype)
        pending0 = True  # re-solve on the warm corral before looking for a new point
    init_carry = (w0, w0 > 0, jnp.asarray(pending0), jnp.asarray(False), 0)
    w, *_ = jax.lax.while_loop(keep_going, step, init_carry)
    return w
