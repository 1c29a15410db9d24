"""GradVac: gradient vaccine, adaptive cosine-similarity targets per task pair."""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtlx._src import checks, jacobians, linalg, prng
from mtlx._src.methods import state_dtype
from mtlx._src.paths import layer_ids
from mtlx._src.rows import with_heads
from mtlx._src.weighting import (
    Rows,
    Stats,
    Weighting,
    WeightingTransformation,
    as_transform,
    rows_transform,
)

Granularity = Literal["whole_model", "layer"]


def gradvac_weights(
    gramian: jax.Array,
    targets: jax.Array,
    key: jax.Array,
    *,
    beta: jax.typing.ArrayLike = 0.5,
    eps: jax.typing.ArrayLike = 1e-8,
) -> tuple[jax.Array, jax.Array]:
    r"""GradVac weights ``w`` (T,) and the updated EMA targets :math:`\hat\phi` (T, T).

    For each task ``i`` in a random order of the others ``j`` (one order per task, drawn from
    ``key`` as in :func:`pcgrad_weights`), with :math:`\phi_{ij}` the cosine between the current
    :math:`g_i^{PC}` and :math:`g_j`: if :math:`\phi_{ij} < \hat\phi_{ij}`,

    .. math:: g_i^{PC} \mathrel{+}= \frac{\|g_i^{PC}\| (\hat\phi_{ij} \sqrt{1 - \phi_{ij}^2}
       - \phi_{ij} \sqrt{1 - \hat\phi_{ij}^2})}{\|g_j\| \sqrt{1 - \hat\phi_{ij}^2} + \epsilon}\, g_j

    then :math:`\hat\phi_{ij} \leftarrow (1 - \beta) \hat\phi_{ij} + \beta \phi_{ij}`.
    :math:`g_i^{PC} = J^\top c_i` is kept as coefficients, so only ``G`` is read; the T tasks run
    at once under ``jax.vmap`` (task ``i`` only touches row ``i`` of the targets).

    Returns:
      ``(weights, new_targets)`` with ``sum_t weights[t] g_t`` the sum of the vaccinated rows.
    """
    num_tasks = gramian.shape[0]
    dtype = gramian.dtype
    beta = jnp.asarray(beta, dtype)
    eps = jnp.asarray(eps, dtype)
    norms = linalg.norms_from_gramian(gramian)

    def vaccinate(i, key_i, target_row):
        def step(carry, j):
            # c_gramian[k] = <g_i^PC, g_k>, updated with c: O(T) per pair instead of O(T^2).
            c, c_gramian, row = carry
            norm_i = jnp.sqrt(jnp.maximum(c @ c_gramian, 0.0))
            phi = linalg.safe_divide(c_gramian[j], norm_i * norms[j] + eps)
            phi_hat = row[j]
            sqrt_phi = jnp.sqrt(jnp.maximum(1.0 - phi * phi, 0.0))
            sqrt_hat = jnp.sqrt(jnp.maximum(1.0 - phi_hat * phi_hat, 0.0))
            correction = linalg.safe_divide(
                norm_i * (phi_hat * sqrt_phi - phi * sqrt_hat), norms[j] * sqrt_hat + eps
            )
            other = j != i
            correction = jnp.where(other & (phi < phi_hat), correction, 0.0)
            c = c.at[j].add(correction)
            c_gramian = c_gramian + correction * gramian[j]
            row = row.at[j].set(jnp.where(other, (1.0 - beta) * phi_hat + beta * phi, phi_hat))
            return (c, c_gramian, row), None

        c0 = jax.nn.one_hot(i, num_tasks, dtype=dtype)
        order = jax.random.permutation(key_i, num_tasks)
        (c, _, row), _ = jax.lax.scan(step, (c0, gramian[i], target_row), order)
        return c, row

    keys = jax.random.split(key, num_tasks)
    coefficients, new_targets = jax.vmap(vaccinate)(
        jnp.arange(num_tasks), keys, targets.astype(dtype)
    )
    return coefficients.sum(axis=0), new_targets.astype(targets.dtype)


class GradVacState(NamedTuple):
    """State of :func:`gradvac`."""

    targets: jax.Array  # (T, T), or (L, T, T) per layer: EMA cosine targets phi_hat[i, j]
    key: jax.Array  # typed PRNG key, split once per step for the task orders


def gradvac(
    num_tasks: int,
    beta: jax.typing.ArrayLike = 0.5,
    eps: jax.typing.ArrayLike = 1e-8,
    seed: int | jax.Array = 0,
    granularity: Granularity = "whole_model",
) -> WeightingTransformation | optax.GradientTransformationExtraArgs:
    r"""Gradient Vaccine (GradVac), Algorithm 2 of Wang et al. (ICLR 2021), as TorchJD's GradVac.

    Generalises PCGrad: instead of acting only on conflicts (:math:`\phi_{ij} < 0`), each pair
    keeps an EMA target :math:`\hat\phi_{ij}` of its cosine similarity (starting at 0), and when
    :math:`g_i` (already modified by earlier pairs) has a lower cosine with :math:`g_j` than the
    target, the closed-form amount of :math:`g_j` that raises it to the target is added. The
    update is the sum of the modified rows. Reads only the Gramian.

    Args:
      num_tasks: T, the size of the targets in the state (static).
      beta: EMA rate of the targets, in [0, 1].
      eps: non-negative constant added to the denominators.
      seed: int seed or PRNG key for the task orders (kept in the state).
      granularity: ``"whole_model"`` (default, as TorchJD: one Gramian over every shared leaf) or
        ``"layer"`` (the paper's per-layer granularity, TorchJD's ``all_layer`` grouping: GradVac
        runs on each layer's rows, with its own targets, and the same task orders for every
        layer). A layer is the parent of its leaves (a leaf at the root is a layer by itself),
        as in :mod:`mtlx.analysis`; ``init`` then needs the params, to count the layers.

    Static under ``optax.inject_hyperparams`` (``static_args``): ``num_tasks``; every other
    numeric argument may be injected.

    Returns:
      A transformation from a per-task Jacobian to one update. Accepts ``gramian=`` (whole-model
      granularity); ``task_losses`` is optional.

    Raises:
      ValueError: for ``num_tasks < 1``, ``beta`` outside [0, 1], a negative ``eps``, an unknown
        ``granularity``, a Jacobian whose number of tasks differs from ``num_tasks``, or (per
        layer) a Jacobian whose layers differ from those of the params given to ``init``.

    Properties: positively homogeneous (exactly with ``eps = 0``, up to ``eps`` otherwise: the
    targets are cosines), equal to PCGrad on the first step
    (targets 0), equal to the plain sum when every cosine is at or above its target;
    permutation-invariant in law. Stateful: targets and PRNG key.

    .. note::
      With ``eps = 0``, a division by zero (a zero row) gives a zero correction instead of
      TorchJD's NaN. The targets are updated for every visited pair, as in the paper and TorchJD
      (LibMTL 1.1.5 updates them only when a correction is made, and has no ``eps``). Per layer,
      task-specific leaves get their own task's gradient.

    References:
      Wang, Tsvetkov, Firat & Cao, "Gradient Vaccine: Investigating and Improving Multi-task
      Optimization in Massively Multilingual Models", ICLR 2021.
    """
    checks.positive_int("num_tasks", num_tasks)
    checks.in_unit_interval("beta", beta)
    checks.nonnegative("eps", eps)
    if granularity not in ("whole_model", "layer"):
        raise ValueError(f"granularity must be 'whole_model' or 'layer'; got {granularity!r}.")

    def init(params) -> GradVacState:
        shape = (num_tasks, num_tasks)
        if granularity == "layer":
            _, num_layers = layer_ids(params)
            if num_layers == 0:
                raise ValueError(
                    "gradvac(granularity='layer') counts the layers at init: call init(params)."
                )
            shape = (num_layers,) + shape
        return GradVacState(targets=jnp.zeros(shape, state_dtype()), key=prng.as_key(seed))

    if granularity == "layer":
        return _per_layer_transform(num_tasks, beta, eps, init)

    def weights(stats: Stats, state: GradVacState) -> tuple[jax.Array, GradVacState]:
        next_key, key = jax.random.split(state.key)
        w, targets = gradvac_weights(stats.gramian, state.targets, key, beta=beta, eps=eps)
        return w, GradVacState(targets=targets, key=next_key)

    return as_transform(
        Weighting("gradvac", weights, init=init, reads="gramian", num_tasks=num_tasks)
    )


def _per_layer_transform(
    num_tasks: int, beta: jax.typing.ArrayLike, eps: jax.typing.ArrayLike, init
) -> optax.GradientTransformationExtraArgs:
    """GradVac on each layer's rows: one Gramian and one set of targets per layer."""

    def update_rows(rows: Rows, state: GradVacState) -> tuple[list[jax.Array], GradVacState]:
        leaf_layers, num_layers = layer_ids(jax.tree.unflatten(rows.treedef, rows.shared_mask))
        if num_layers != state.targets.shape[0]:
            raise ValueError(
                f"the Jacobian has {num_layers} layers but gradvac's state was initialized for "
                f"{state.targets.shape[0]}: call init with params of the Jacobian's structure."
            )
        dtype = jacobians.gramian_dtype(jnp.result_type(*rows.leaves))
        gramians = [jnp.zeros((num_tasks, num_tasks), dtype) for _ in range(num_layers)]
        shared_layers = [i for i, s in zip(leaf_layers, rows.shared_mask) if s]
        for x, layer in zip(rows.shared, shared_layers):
            gramians[layer] = gramians[layer] + jacobians.leaf_gramian(x).astype(dtype)
        next_key, key = jax.random.split(state.key)
        # One key for every layer: each task visits the others in the same order in every layer.
        w, targets = jax.vmap(lambda g, t: gradvac_weights(g, t, key, beta=beta, eps=eps))(
            jnp.stack(gramians), state.targets
        )
        shared_out = [
            jacobians.weighted_sum(w[layer], x) for x, layer in zip(rows.shared, shared_layers)
        ]
        new_state = GradVacState(targets=targets.astype(state.targets.dtype), key=next_key)
        return with_heads(rows, shared_out), new_state

    return rows_transform(update_rows, name="gradvac", init=init, num_tasks=num_tasks)
