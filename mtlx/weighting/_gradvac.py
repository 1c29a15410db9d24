"""GradVac: gradient vaccine, adaptive cosine-similarity targets per task pair."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mtlx._src import builders, jacobians, linalg, prng

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
) -> optax.GradientTransformationExtraArgs:
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
    if not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"num_tasks must be a positive int; got {num_tasks!r}.")
    if not isinstance(beta, jax.core.Tracer) and not 0.0 <= float(beta) <= 1.0:
        raise ValueError(f"beta must be in [0, 1]; got {beta!r}.")
    if not isinstance(eps, jax.core.Tracer) and not float(eps) >= 0.0:
        raise ValueError(f"eps must be non-negative; got {eps!r}.")
    if granularity not in ("whole_model", "layer"):
        raise ValueError(f"granularity must be 'whole_model' or 'layer'; got {granularity!r}.")

    def init_fn(params):
        dtype = jnp.promote_types(jnp.float32, jnp.result_type(float))
        shape = (num_tasks, num_tasks)
        if granularity == "layer":
            _, num_layers = _layer_ids(params)
            if num_layers == 0:
                raise ValueError(
                    "gradvac(granularity='layer') counts the layers at init: call init(params)."
                )
            shape = (num_layers,) + shape
        return GradVacState(targets=jnp.zeros(shape, dtype), key=prng.as_key(seed))

    if granularity == "layer":
        return optax.GradientTransformationExtraArgs(
            init_fn, _per_layer_update_fn(num_tasks, beta, eps)
        )

    def weights_fn(gramian, losses, state):
        del losses
        builders.check_num_tasks("gradvac", num_tasks, gramian.shape[0])
        next_key, key = jax.random.split(state.key)
        weights, targets = gradvac_weights(gramian, state.targets, key, beta=beta, eps=eps)
        return weights, GradVacState(targets=targets, key=next_key)

    return builders.gramian_weighting(weights_fn, name="gradvac", init_fn=init_fn)


def _layer_ids(tree: Any) -> tuple[list[int], int]:
    """The layer index of every leaf (layers numbered in order of appearance), and their number."""
    names: dict[str, int] = {}
    ids = []
    for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = jax.tree_util.keystr(path[:-1] if len(path) > 1 else path)
        ids.append(names.setdefault(name, len(names)))
    return ids, len(names)


def _per_layer_update_fn(num_tasks: int, beta: jax.typing.ArrayLike, eps: jax.typing.ArrayLike):
    """GradVac on each layer's rows: one Gramian and one set of targets per layer."""

    def update_fn(updates, state, params=None, *, task_losses=None, **extra_args):
        del params, extra_args
        jac = jacobians.as_jacobian(updates)
        jacobians.check_task_losses(task_losses, jac.num_tasks, required=False, method="gradvac")
        builders.check_num_tasks("gradvac", num_tasks, jac.num_tasks)
        rows = jac.rows()
        ids, num_layers = _layer_ids(rows)
        if num_layers != state.targets.shape[0]:
            raise ValueError(
                f"the Jacobian has {num_layers} layers but gradvac's state was initialized for "
                f"{state.targets.shape[0]}: call init with params of the Jacobian's structure."
            )
        leaves = jax.tree.leaves(rows)
        dtype = jacobians.gramian_dtype(jnp.result_type(*leaves))
        gramians = [jnp.zeros((num_tasks, num_tasks), dtype) for _ in range(num_layers)]
        for x, layer, shared in zip(leaves, ids, jac.shared_mask):
            if shared:
                gramians[layer] = gramians[layer] + jacobians.leaf_gramian(x).astype(dtype)
        next_key, key = jax.random.split(state.key)
        # One key for every layer: each task visits the others in the same order in every layer.
        weights, targets = jax.vmap(lambda g, t: gradvac_weights(g, t, key, beta=beta, eps=eps))(
            jnp.stack(gramians), state.targets
        )
        out = [
            jacobians.weighted_sum(weights[layer], x) if shared else x.sum(axis=0)
            for x, layer, shared in zip(leaves, ids, jac.shared_mask)
        ]
        new_state = GradVacState(targets=targets.astype(state.targets.dtype), key=next_key)
        return jax.tree.unflatten(jac.treedef, out), new_state

    return update_fn
