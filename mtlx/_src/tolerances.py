"""Tolerances and epsilons of the weighting methods and their solvers: one policy, in one place.

**Relative tolerances.** The solvers and the Gramian algebra decide "converged", "zero" or
"feasible" against a power of the dtype's machine epsilon (:func:`eps`) times the scale of the
problem at hand (the largest diagonal entry of the matrix, the largest row norm). Scaling every row
by ``c > 0`` then scales the problem and its tolerance together, so the weights do not change, and
the same code is as accurate in float32 as in float64. Each role has one constant below.

**Zero rows.** A task row counts as zero when its norm is at most :func:`zero_row_rtol` times the
largest row norm (:func:`mtlx._src.linalg.inverse_norms`): below that, products of four row
entries, which the Gramian algebra forms, underflow. One rule for every method that divides by a
row norm (ConFIG, IMTL-G, MGDA's gradient normalization, Nash-MTL, FairGrad, the cosines).

**Reference guards.** Where a method reproduces a reference implementation (TorchJD, LibMTL, the
authors' code) that adds a fixed constant before dividing, taking a square root or a logarithm,
the same absolute constant is used, so that the results match. They are named here by what they
guard; nothing else should use them.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

# ---- relative tolerances -----------------------------------------------------------------------

# A row is zero when its norm is at most tiny ** ZERO_ROW_TINY_POWER times the largest row norm
# (float32: 3e-10; float64: 1e-77, in effect an exact zero test).
ZERO_ROW_TINY_POWER = 0.25

# Newton's method (Nash-MTL, FairGrad) stops when the squared Newton decrement is below
# T * eps ** NEWTON_TOL_POWER: past that, the next step changes the weights by rounding only.
NEWTON_TOL_POWER = 1.5

# The active-set QP (solvers.nonnegative_qp): a multiplier counts as non-negative, a coordinate as
# positive, up to QP_TOL_FACTOR * eps * (the QP's scale).
QP_TOL_FACTOR = 64.0

# Wolfe's min-norm point (solvers.min_norm_point): optimal when min_t (Gw + q)_t is within
# MIN_NORM_TOL_FACTOR * T * eps * max_t G_tt of w^T (Gw + q); its corral systems get the relative
# ridge MIN_NORM_RIDGE_FACTOR * eps.
MIN_NORM_TOL_FACTOR = 10.0
MIN_NORM_RIDGE_FACTOR = 10.0

# The exact mode of the dual-cone projections (UPGrad, DualProj: exact=True) solves on the cosine
# matrix D G D (unit diagonal) with the relative ridge EXACT_CONE_RIDGE_FACTOR * eps: enough to keep
# the active-set systems solvable when G is singular, and errors along G's null space do not move
# the update J^T v.
EXACT_CONE_RIDGE_FACTOR = 16.0

# CAGrad's root of radius * tau = ||g_w(tau)|| is found to the relative accuracy
# eps ** ROOT_RTOL_POWER: the min-norm points it evaluates are exact to about this on
# ill-conditioned Gramians.
ROOT_RTOL_POWER = 0.75

# FairGrad's relative ridge on the Gramian's diagonal, G_tt -> (1 + FAIRGRAD_RIDGE_FACTOR eps) G_tt,
# so that the root exists when rows cancel.
FAIRGRAD_RIDGE_FACTOR = 100.0

# The Moore-Penrose pseudo-inverse of a PSD matrix drops eigenvalues at or below
# PINV_RTOL_FACTOR * T * eps times the largest (jnp.linalg.pinv's rule).
PINV_RTOL_FACTOR = 10.0

# Nash-MTL's ridge on the cosine matrix is at least NASH_RIDGE_FACTOR * eps: its default 1e-8 is
# below float32's resolution (1 + 1e-8 == 1), which would leave the cosine matrix of opposite or
# duplicate rows singular and the Newton start infinite.
NASH_RIDGE_FACTOR = 16.0

# ---- reference guards (absolute) ---------------------------------------------------------------

# The 1e-8 that TorchJD, LibMTL and the authors' codes add to norms, losses and scales before
# dividing (and torch's cosine_similarity clamp): COSMOS, DB-MTL, MoCo, SDMGrad, UW-SO and UW-O.
REFERENCE_EPS = 1e-8

# ExcessMTL's AdaGrad epsilon under the square root, and its guard of the baseline division
# (TorchJD and the official code).
ADAGRAD_EPS = 1e-7

# Added under PBI's square root of d2 (TorchJD): a finite gradient when the losses lie on the
# preference direction.
PBI_SQRT_EPS = 1e-12

# Added inside STCH's logarithms of the losses (LibMTL and the official code).
LOG_EPS = 1e-20

# torch.nn.functional.normalize's eps on a norm (ConFIG normalizes its direction with it).
NORMALIZE_EPS = 1e-12

# TorchJD's defaults for the Gramian's normalization (a trace below it counts as zero) and
# regularization (added to the normalized Gramian's diagonal): UPGrad, DualProj, CAGrad.
GRAMIAN_NORM_EPS = 1e-4
GRAMIAN_REG_EPS = 1e-4


def eps(dtype: Any) -> float:
    """The machine epsilon of ``dtype``."""
    return float(jnp.finfo(dtype).eps)


def zero_row_rtol(dtype: Any) -> float:
    """Rows with a norm at most this times the largest row norm are zero rows (see above)."""
    return float(jnp.finfo(dtype).tiny) ** ZERO_ROW_TINY_POWER
