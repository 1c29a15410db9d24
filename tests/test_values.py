"""Known values: TorchJD's published outputs (its tests/unit/aggregation/test_values.py) on J_BASE.

Each row: (mtlx factory name, factory kwargs, Jacobian, expected update); checked to 1e-4 as TorchJD
checks them. A method whose TorchJD value depends on torch's RNG (Random, GradDrop) is not here.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtlx

J_BASE = np.array([[-4.0, 1.0, 1.0], [6.0, 1.0, 1.0]])
J_KRUM = np.array(
    [[1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [75.0, -666.0, 23], [1.0, 2.0, 3.0], [2.0, 0.0, 1.0]]
)
J_TRIMMED_MEAN = np.array([[1e11, 3.0], [1.0, -1e11], [-1e10, 1e10], [2.0, 2.0]])

AGGREGATOR_VALUES = [
    ("scalarization", {"weights": [1.0, 2.0]}, J_BASE, [8.0, 3.0, 3.0]),
    ("mean", {}, J_BASE, [1.0, 1.0, 1.0]),
    ("ew", {}, J_BASE, [2.0, 2.0, 2.0]),
    ("mgda", {}, J_BASE, [0.0, 1.0, 1.0]),
    ("pcgrad", {}, J_BASE, [0.5848, 3.8012, 3.8012]),
    ("upgrad", {}, J_BASE, [0.2929, 1.9004, 1.9004]),
    # First update of the stateful methods, computed with TorchJD 0.18 (not in its value table).
    ("excess_mtl", {"num_tasks": 2}, J_BASE, [4.8080, 1.0, 1.0]),
    ("modo", {"num_tasks": 2}, J_BASE, [-4.0, 1.0, 1.0]),
    ("sdmgrad", {"num_tasks": 2}, J_BASE, [4.8462, 1.0, 1.0]),
    ("cr_mogm", {"weighting": mtlx.mgda(), "num_tasks": 2}, J_BASE, [0.0, 1.0, 1.0]),
    ("krum", {"n_byzantine": 1, "n_selected": 4}, J_KRUM, [1.25, 0.75, 1.5]),
    ("trimmed_mean", {"trim_number": 1}, J_TRIMMED_MEAN, [1.5, 2.5]),
    ("gradvac", {"num_tasks": 2}, J_BASE, [0.5848, 3.8012, 3.8012]),
    ("nash_mtl", {"num_tasks": 2}, J_BASE, [0.0542, 0.7061, 0.7061]),  # TorchJD 0.18
    ("nash_mtl", {"num_tasks": 2, "max_norm": 0.0}, J_BASE, [0.0766, 0.9985, 0.9985]),
    ("pcd", {"num_tasks": 2}, J_BASE, [-0.8200, 2.9434, 2.9434]),  # TorchJD 0.18
    ("aligned_mtl", {}, J_BASE, [0.2133, 0.9673, 0.9673]),
    ("config", {}, J_BASE, [0.1588, 2.0706, 2.0706]),
    ("dualproj", {}, J_BASE, [0.5563, 1.1109, 1.1109]),
    ("imtl_g", {}, J_BASE, [0.0767, 1.0, 1.0]),
    ("cagrad", {"c": 0.5, "rescale": 0}, J_BASE, [0.1835, 1.2041, 1.2041]),  # TorchJD's convention
    ("cagrad", {"c": 0.5}, J_BASE, [0.1468, 0.9633, 0.9633]),  # rescale=1: the above / 1.25
    ("fairgrad", {"alpha": 1.0}, J_BASE, [0.0766, 0.9985, 0.9985]),  # TorchJD 0.18, unpublished
]

WEIGHTS_VALUES = [
    ("mgda_weights", {}, J_BASE, [0.6, 0.4]),
    ("upgrad_weights", {}, J_BASE, [1.1109, 0.7894]),
    ("krum_weights", {"n_byzantine": 1, "n_selected": 4}, J_KRUM, [0.25, 0.25, 0, 0.25, 0.25]),
    # IMTL (hybrid): IMTL-G on diag(e^s) G diag(e^s), times e^s; by hand: s = (0, log 2) gives
    # alpha = [[18, -44], [-44, 152]]^-1 [sqrt 18, sqrt 152], normalised, = [0.7440, 0.2560].
    ("imtl_weights", {"log_scales": np.zeros(2)}, J_BASE, [0.5923, 0.4077]),
    ("imtl_weights", {"log_scales": np.log([1.0, 2.0])}, J_BASE, [0.7440, 0.5120]),
    ("aligned_mtl_weights", {}, J_BASE, [0.5591, 0.4083]),
    ("dualproj_weights", {}, J_BASE, [0.6109, 0.5]),
    ("imtl_g_weights", {}, J_BASE, [0.5923, 0.4077]),
    ("cagrad_weights", {"c": 0.5, "rescale": 0}, J_BASE, [0.7041, 0.5]),
]


@pytest.mark.parametrize(
    "name, kwargs, jac, expected", AGGREGATOR_VALUES, ids=[row[0] for row in AGGREGATOR_VALUES]
)
def test_aggregator_value(name, kwargs, jac, expected):
    tx = getattr(mtlx, name)(**kwargs)
    jac = jnp.asarray(jac)
    out, _ = jax.jit(tx.update)(jac, tx.init(jac[0]), None)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize(
    "name, kwargs, jac, expected", WEIGHTS_VALUES, ids=[row[0] for row in WEIGHTS_VALUES]
)
def test_weights_value(name, kwargs, jac, expected):
    jac = jnp.asarray(jac)
    weights = getattr(mtlx, name)(jac @ jac.T, **kwargs)
    np.testing.assert_allclose(weights, expected, rtol=0, atol=1e-4)
