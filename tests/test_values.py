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
]

WEIGHTS_VALUES = [
    ("mgda_weights", {}, J_BASE, [0.6, 0.4]),
    ("upgrad_weights", {}, J_BASE, [1.1109, 0.7894]),
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
