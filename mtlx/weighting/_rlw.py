"""RLW: random loss weighting, new task weights drawn from a fixed distribution at every step."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mtlx._src import jacobians, prng
from mtlx._src.weighting import (
    Stats,
    Weighting,
    WeightingTransformation,
    as_transform,
    check_task_losses,
    jacobian_of,
)

Distribution = Literal[
    "normal", "uniform", "dirichlet", "random_normal", "bernoulli", "constrained_bernoulli"
]
DISTRIBUTIONS: tuple[str, ...] = (
    "normal",
    "uniform",
    "dirichlet",
    "random_normal",
    "bernoulli",
    "constrained_bernoulli",
)

# A stream independent of the per-step keys, for the per-task mean and scale of "random_normal".
_RANDOM_NORMAL_STREAM = 0x524C57


def _check_distribution(distribution: str) -> None:
    if distribution not in DISTRIBUTIONS:
        raise ValueError(
            f"unknown RLW distribution {distribution!r}; expected one of "
            f"{', '.join(DISTRIBUTIONS)}."
        )


def _bernoulli_not_all_zero(key: jax.Array, num_tasks: int, dtype: Any) -> jax.Array:
    """Independent Bernoulli(1/2) entries conditioned on not all being zero, in one draw.

    Every non-zero 0/1 vector has probability ``1 / (2^T - 1)``. Draw the index ``k`` of the first
    one with ``P(k) ~ 2^-(k+1)``, then the entries after it as fair coins: a vector whose first
    one is at ``k`` then has probability ``2^-(k+1) 2^-(T-k-1) / (1 - 2^-T) = 1 / (2^T - 1)``. No
    rejection loop, so no data-dependent trip count inside ``jax.jit``.
    """
    key_first, key_rest = jax.random.split(key)
    index = jnp.arange(num_tasks)
    first = jax.random.categorical(key_first, -(index + 1.0) * np.log(2.0))
    coins = jax.random.bernoulli(key_rest, 0.5, (num_tasks,))
    ones = (index == first) | ((index > first) & coins)
    return ones.astype(dtype)


def rlw_weights(
    key: jax.Array,
    num_tasks: int,
    distribution: Distribution = "normal",
    *,
    concentration: jax.typing.ArrayLike = 1.0,
    loc: jax.typing.ArrayLike = 0.0,
    scale: jax.typing.ArrayLike = 1.0,
) -> jax.Array:
    r"""One draw of random task weights, shape ``(T,)``, as in Lin et al. (TMLR 2022).

    * ``"normal"``: :math:`\mathrm{softmax}(z)`, :math:`z_t \sim \mathcal N(\mathrm{loc}_t,
      \mathrm{scale}_t^2)` (standard normal by default): the paper's default.
    * ``"uniform"``: :math:`\mathrm{softmax}(u)`, :math:`u_t \sim U(0, 1)`.
    * ``"dirichlet"``: :math:`w \sim \mathrm{Dir}(\alpha)` with ``concentration`` :math:`\alpha`
      (a scalar or ``(T,)``): already on the simplex, used as drawn.
    * ``"random_normal"``: as ``"normal"``; :func:`rlw` draws ``loc`` and ``scale`` once per run.
    * ``"bernoulli"``: raw 0/1 weights, each task kept with probability 1/2, conditioned on at
      least one being kept (exactly, in one draw: no rejection loop).
    * ``"constrained_bernoulli"``: a one-hot vector on a uniformly drawn task.

    Args:
      key: PRNG key for this draw.
      num_tasks: the number of tasks T (static).
      distribution: one of the names above.
      concentration: Dirichlet concentration :math:`\alpha > 0`.
      loc: mean of the normal logits (``"normal"``, ``"random_normal"``).
      scale: standard deviation of the normal logits.

    Returns:
      ``(T,)`` non-negative weights; they sum to 1 except for ``"bernoulli"``.
    """
    _check_distribution(distribution)
    dtype = jnp.result_type(float)
    if distribution in ("normal", "random_normal"):
        logits = jnp.asarray(loc, dtype) + jnp.asarray(scale, dtype) * jax.random.normal(
            key, (num_tasks,), dtype
        )
        return jax.nn.softmax(logits)
    if distribution == "uniform":
        return jax.nn.softmax(jax.random.uniform(key, (num_tasks,), dtype))
    if distribution == "dirichlet":
        alpha = jnp.broadcast_to(jnp.asarray(concentration, dtype), (num_tasks,))
        return jax.random.dirichlet(key, alpha, dtype=dtype)
    if distribution == "bernoulli":
        return _bernoulli_not_all_zero(key, num_tasks, dtype)
    return jax.nn.one_hot(jax.random.randint(key, (), 0, num_tasks), num_tasks, dtype=dtype)


class RLWState(NamedTuple):
    """State of :func:`rlw` and :func:`rgw`."""

    key: jax.Array  # typed PRNG key, split once per step: one weight draw per step


def random_normal_parameters(seed: int | jax.Array, num_tasks: int) -> tuple[jax.Array, jax.Array]:
    """The per-task ``(loc, scale)``, each ``U(0, 1)``, that ``distribution="random_normal"`` uses.

    Drawn from ``seed`` on a stream of their own, so they are fixed for a run (and rebuilt
    identically from the seed after a restart) while the state's key moves on every step.
    """
    key = jax.random.fold_in(prng.as_key(seed), _RANDOM_NORMAL_STREAM)
    loc, scale = jax.random.uniform(key, (2, num_tasks), jnp.result_type(float))
    return loc, scale


def _check_random_weighting_args(num_tasks: int | None, concentration: Any) -> None:
    if num_tasks is not None and (not isinstance(num_tasks, int) or num_tasks < 1):
        raise ValueError(f"num_tasks must be a positive int or None; got {num_tasks!r}.")
    if not isinstance(concentration, jax.core.Tracer):
        alpha = np.asarray(concentration)
        if alpha.ndim > 1 or not np.all(alpha > 0):
            raise ValueError(
                f"concentration must be a positive scalar or (T,) vector; got {concentration!r}."
            )


def _draw(
    key: jax.Array,
    num_tasks: int,
    distribution: Distribution,
    seed: int | jax.Array,
    concentration: jax.typing.ArrayLike,
) -> jax.Array:
    """One draw of ``rlw_weights`` with the run's fixed parameters (``random_normal``'s loc/scale)."""
    alpha = jnp.asarray(concentration)
    if alpha.ndim == 1 and alpha.shape[0] != num_tasks:
        raise ValueError(f"concentration has {alpha.shape[0]} entries for {num_tasks} tasks.")
    loc, scale = (0.0, 1.0)
    if distribution == "random_normal":
        loc, scale = random_normal_parameters(seed, num_tasks)
    return rlw_weights(
        key, num_tasks, distribution, concentration=concentration, loc=loc, scale=scale
    )


def random_weighting(
    name: str,
    task_specific: jacobians.TaskSpecificMode,
    distribution: Distribution,
    seed: int | jax.Array,
    concentration: jax.typing.ArrayLike,
    num_tasks: int | None,
) -> WeightingTransformation:
    """The transform of :func:`rlw` (``task_specific="weighted"``) and :func:`rgw` (``"own"``)."""
    _check_distribution(distribution)
    _check_random_weighting_args(num_tasks, concentration)

    def init(params: Any) -> RLWState:
        del params
        return RLWState(key=prng.as_key(seed))

    def weights(stats: Stats, state: RLWState) -> tuple[jax.Array, RLWState]:
        next_key, key = jax.random.split(state.key)
        w = _draw(key, stats.num_tasks, distribution, seed, concentration)
        return w, RLWState(key=next_key)

    return as_transform(
        Weighting(
            name,
            weights,
            init=init,
            reads="nothing",
            task_specific=task_specific,
            num_tasks=num_tasks,
        )
    )


def random_row_weights(
    distribution: Distribution = "normal",
    seed: int | jax.Array = 0,
    *,
    concentration: jax.typing.ArrayLike = 1.0,
    num_tasks: int | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Random weights on the task losses, chained before ANY method (Lin et al., TMLR 2022, §5).

    At every step it draws :math:`\lambda \sim p` (the distributions of :func:`rlw_weights`)
    and hands on the Jacobian of the randomly weighted losses :math:`\lambda_t L_t`, i.e. the rows
    :math:`\lambda_t g_t` (heads included), to the method that follows:

    .. code-block:: python

      tx = optax.chain(mtlx.random_row_weights("normal"), mtlx.cagrad(), optax.adam(1e-3))

    is "RW + CAGrad" of the paper's Table 3: CAGrad on the gradients of the randomly weighted
    losses. It stays lazy: the engine's Jacobian scaled by :math:`D = \mathrm{diag}(\lambda)`
    has Gramian :math:`D G D` and ``combine(w)`` is the wrapped ``combine(λ * w)``, so a loss-only
    method after it still costs one backward pass and a Gramian method reads the same T rows it
    would read anyway. Followed by :func:`ew` it is :func:`rlw`.

    Args:
      distribution: the weight distribution (see :func:`rlw_weights`); ``"normal"``
        (softmax of a standard normal draw) is the paper's default.
      seed: int seed or PRNG key; the key lives in the state (:class:`RLWState`), split per step.
      concentration: the Dirichlet concentration (scalar or ``(T,)``), for ``"dirichlet"``.
      num_tasks: optional T, checked against the Jacobian's task axis.

    Returns:
      A transformation from a per-task Jacobian to the scaled Jacobian (an :class:`mtlx.Jacobian`),
      for the method chained after it. ``task_losses`` are checked and passed on unchanged by
      ``optax.chain``: a method after it that reads the losses (UW, DWA, ...) sees the unweighted
      ones; only the gradients are weighted.

    Properties: positively homogeneous, one weight draw per step (not per row); the next method's
    scale-invariant parts (MGDA's, IMTL-G's normalisations) undo the scale but not the mix.

    References:
      Lin et al., "Reasonable Effectiveness of Random Weighting: A Litmus Test for Multi-Task
      Learning", TMLR 2022 (arXiv:2111.10603), Table 3 (RW combined with gradient methods).
    """
    _check_distribution(distribution)
    _check_random_weighting_args(num_tasks, concentration)

    def init_fn(params: Any) -> RLWState:
        del params
        return RLWState(key=prng.as_key(seed))

    def update_fn(updates, state, params=None, *, task_losses=None, **extra_args):
        del extra_args
        jac = jacobian_of(updates, params, "random_row_weights", num_tasks)
        check_task_losses(task_losses, jac.num_tasks, required=False, method="random_row_weights")
        next_key, key = jax.random.split(state.key)
        scales = _draw(key, jac.num_tasks, distribution, seed, concentration)
        return jacobians.ScaledJacobian(jac, scales), RLWState(key=next_key)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def rlw(
    distribution: Distribution = "normal",
    seed: int | jax.Array = 0,
    *,
    concentration: jax.typing.ArrayLike = 1.0,
    num_tasks: int | None = None,
) -> WeightingTransformation:
    r"""Random loss weighting (RLW), Algorithm 1 of Lin et al. (TMLR 2022).

    At every step new weights :math:`w \sim p` are drawn and the update is the gradient of the
    randomly weighted loss, :math:`\sum_t w_t \nabla L_t`, heads included:

    .. math:: w = f(\tilde w),\quad \tilde w \sim p(\tilde w), \qquad
       \text{update} = \nabla_\theta \textstyle\sum_t w_t L_t

    With the engine's Jacobian (:func:`mtlx.value_and_jacobian`) this is ONE backward pass with
    cotangent ``w``: RLW costs one equal-weighting step. See :func:`rlw_weights` for the
    distributions: ``"normal"`` (softmax of a standard normal draw, the paper's default and
    TorchJD's ``scalarization.Random``), ``"uniform"``, ``"dirichlet"``, ``"random_normal"``,
    ``"bernoulli"``, ``"constrained_bernoulli"``.

    Args:
      distribution: the weight distribution (LibMTL's ``--rlw_dist`` names, lower-case).
      seed: int seed or PRNG key; the key lives in the state and is split once per step.
      concentration: the Dirichlet concentration (scalar or ``(T,)``), for ``"dirichlet"``.
      num_tasks: optional T, checked against the Jacobian's task axis.

    Static under ``optax.inject_hyperparams`` (``static_args``): ``num_tasks``; every other
    numeric argument may be injected.

    Returns:
      A transformation from a per-task Jacobian (the engine's, or a pytree whose leaves are
      ``(T, *shape)``) to one update. ``task_losses`` is optional (checked when given).

    Properties: positively homogeneous; a positive combination of the rows (non-negative weights);
      permutation-invariant in law for the exchangeable distributions (all but ``"random_normal"``
      and a non-constant ``concentration``); one backward pass.

    .. note::
      ``"random_normal"`` follows the authors' ICLR 2022 code release, as adapted by Kurin et al.
      ("In Defense of the Unitary Scalarization", NeurIPS 2022): a per-task mean and standard
      deviation drawn once from ``U(0, 1)`` (:func:`random_normal_parameters`, derived from
      ``seed``), then the softmax of a normal draw with them at every step.

    .. warning::
      LibMTL 1.1.5 (the authors' library) applies a softmax to its Dirichlet sample too, which
      pulls it towards uniform weights; mtlx uses the Dirichlet sample as drawn (it already lies on
      the simplex), as the ICLR 2022 release does. LibMTL's ``constrained_Bernoulli`` branch raises
      (it calls an unimported ``random``); mtlx draws the one-hot vector that branch intends.

    References:
      Lin et al., "Reasonable Effectiveness of Random Weighting: A Litmus Test for Multi-Task
      Learning", TMLR 2022 (arXiv:2111.10603).
    """
    return random_weighting("rlw", "weighted", distribution, seed, concentration, num_tasks)
