"""UPGrad: unconflicting projection of gradients (Jacobian descent)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from mtlx._src import builders, linalg, solvers


def upgrad_weights(
    gramian: jax.Array,
    pref_vector: jax.Array | None = None,
    *,
    norm_eps: float = 1e-4,
    reg_eps: float = 1e-4,
    max_iters: int | None = None,
) -> jax.Array:
    r"""UPGrad weights: ``w = sum_i v^(i)``, ``v^(i) = argmin_{v >= p_i e_i} v^T G v``.

    ``J^T v^(i)`` is the projection of ``p_i g_i`` onto the dual cone of the rows. ``G`` is first
    normalized by its trace and regularized by ``reg_eps I`` as in TorchJD; the T projections are
    solved together (a batched active-set QP).
    """
    num_tasks = gramian.shape[0]
    if pref_vector is None:
        pref_vector = jnp.full((num_tasks,), 1.0 / num_tasks, gramian.dtype)
    g = linalg.regularize_gramian(linalg.normalize_gramian(gramian, norm_eps), reg_eps)
    projected = solvers.project_weights_to_dual_cone(
        jnp.diag(pref_vector.astype(g.dtype)), g, max_iters=max_iters
    )
    return projected.sum(axis=0)


def upgrad(
    pref_vector: jax.typing.ArrayLike | None = None,
    norm_eps: float = 1e-4,
    reg_eps: float = 1e-4,
    max_iters: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""UPGrad (Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024).

    .. math:: \text{update} = \textstyle\sum_i \pi_J(p_i\, g_i)

    where :math:`\pi_J` projects onto the dual cone :math:`\{x : Jx \succeq 0\}` of the rows and
    :math:`p` is the preference vector (:math:`1/T` by default). Each projection is the QP of
    their Proposition 1 on the T x T Gramian, solved in pure JAX; matches TorchJD's ``UPGrad``.

    Args:
      pref_vector: ``(T,)`` preference weights; ``None`` for ``1/T``.
      norm_eps: the Gramian is set to zero when its trace is below this (all rows ~ 0).
      reg_eps: added to the normalized Gramian's diagonal to make it positive definite.
      max_iters: bound on the active-set iterations of the QP solver (None: 4 T + 8).

    Properties: non-conflicting, permutation-invariant (with the default preference), positively
    homogeneous, equal to ``p``-weighted sum when no pair conflicts.
    """
    pref = builders.as_pref_vector(pref_vector)

    def weights_fn(gramian, losses, state):
        del losses
        builders.check_pref_vector(pref, gramian.shape[0])
        w = upgrad_weights(gramian, pref, norm_eps=norm_eps, reg_eps=reg_eps, max_iters=max_iters)
        return w, state

    return builders.gramian_weighting(weights_fn, name="upgrad")
