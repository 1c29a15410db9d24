"""EW: equal weighting, the sum of the task gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from mtlx._src.weighting import Stats, Weighting, WeightingTransformation, as_transform


def ew() -> WeightingTransformation:
    r"""Equal weighting (EW): the gradient of :math:`\sum_t L_t`, i.e. :math:`\sum_t \nabla L_t`.

    The baseline of every MTL comparison (Lin et al., "Reasonable Effectiveness of Random
    Weighting", TMLR 2022). With the engine's Jacobian it costs one backward pass. TorchJD's
    ``Sum`` aggregator; LibMTL's ``EW``.

    Static under ``optax.inject_hyperparams`` (``static_args``): none; every numeric argument
    may be injected.

    Returns:
      A transformation from a per-task Jacobian (each leaf ``(T, *shape)``, or the engine's
      Jacobian) to the summed gradient (each leaf ``shape``). ``task_losses`` is optional.

    Properties: permutation-invariant, linear, non-conflicting only when the rows do not conflict.
    """

    def weights(stats: Stats, state: optax.EmptyState) -> tuple[jax.Array, optax.EmptyState]:
        return jnp.ones((stats.num_tasks,)), state

    return as_transform(Weighting("ew", weights, reads="nothing", task_specific="weighted"))
