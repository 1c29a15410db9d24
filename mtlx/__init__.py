"""mtlx: multi-task learning in JAX, every task-balancing method an optax gradient transformation.

.. code-block:: python

  tx = optax.chain(mtlx.pcgrad(seed=0), optax.adam(1e-3))
  state = tx.init(params)
  losses, jac = mtlx.value_and_jacobian(loss_fn)(params, batch)
  updates, state = tx.update(jac, state, params, task_losses=losses)
  params = optax.apply_updates(params, updates)
"""

from mtlx._src.compiler import jit_compiler_options
from mtlx.analysis.monitor import ConflictMonitorState, conflict_monitor, layer_conflict_counts
from mtlx.jacobian import (
    FeatureJacobian,
    Jacobian,
    LinearizedJacobian,
    ScaledJacobian,
    StackedJacobian,
    as_jacobian,
    jacobian_rows,
    shared_mask,
    value_and_jacobian,
    value_and_jacobian_per_task,
    value_and_jacobian_through_features,
)
from mtlx.weighting import *  # noqa: F403
from mtlx.weighting import __all__ as _weighting_all

__version__ = "0.1.0"

__all__ = [
    "ConflictMonitorState",
    "conflict_monitor",
    "layer_conflict_counts",
    "FeatureJacobian",
    "Jacobian",
    "LinearizedJacobian",
    "ScaledJacobian",
    "StackedJacobian",
    "as_jacobian",
    "jacobian_rows",
    "jit_compiler_options",
    "shared_mask",
    "value_and_jacobian",
    "value_and_jacobian_per_task",
    "value_and_jacobian_through_features",
    *_weighting_all,
]
