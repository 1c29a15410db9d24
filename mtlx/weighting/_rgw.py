"""RGW: random gradient weighting, RLW's random weights applied to the shared gradients only."""

from __future__ import annotations

import jax

from mtlx._src.weighting import WeightingTransformation
from mtlx.weighting._rlw import Distribution, random_weighting


def rgw(
    distribution: Distribution = "normal",
    seed: int | jax.Array = 0,
    *,
    concentration: jax.typing.ArrayLike = 1.0,
    num_tasks: int | None = None,
) -> WeightingTransformation:
    r"""Random gradient weighting (RGW), Algorithm 2 of Lin et al. (TMLR 2022).

    At every step new weights :math:`w \sim p` (the distributions of :func:`mtlx.rlw_weights`)
    combine the task gradients of the **shared** parameters; each task-specific parameter (a head)
    keeps its own task's unweighted gradient:

    .. math:: \text{update}_{\text{shared}} = \textstyle\sum_t w_t\, g_t, \qquad
       \text{update}_{\text{head}_t} = \nabla_{\text{head}_t} L_t

    With only shared parameters RGW and :func:`mtlx.rlw` give the same update for the same draw.
    With ``distribution="normal"`` this is TorchJD's ``aggregation.Random``. The weights do not
    depend on the Jacobian, so no Gramian is computed: with the engine's Jacobian, the update is
    one VJP with cotangent ``w`` for the shared leaves and one with ones for the heads, of which XLA
    keeps only the backward pass down to the heads: about one EW step.

    Args:
      distribution: the weight distribution; see :func:`mtlx.rlw_weights`.
      seed: int seed or PRNG key; the key lives in the state (:class:`mtlx.RLWState`) and is split
        once per step.
      concentration: the Dirichlet concentration (scalar or ``(T,)``), for ``"dirichlet"``.
      num_tasks: optional T, checked against the Jacobian's task axis.

    Static under ``optax.inject_hyperparams`` (``static_args``): ``num_tasks``; every other
    numeric argument may be injected.

    Returns:
      A transformation from a per-task Jacobian to one update. ``task_losses`` is optional.

    Properties: positively homogeneous, linear in the Jacobian for a given draw; permutation-
      invariant in law for the exchangeable distributions; not non-conflicting.

    References:
      Lin et al., "Reasonable Effectiveness of Random Weighting: A Litmus Test for Multi-Task
      Learning", TMLR 2022 (arXiv:2111.10603).
    """
    # Heads keep their own task's gradient: the only difference from RLW.
    return random_weighting("rgw", "own", distribution, seed, concentration, num_tasks)
