"""train_sweep: K models in one vmapped run equal K separate runs of the trainer."""

import jax
import numpy as np
import pytest

from mtlx.training import TrainConfig, classification_tasks, datasets, train, train_sweep

CONFIG = TrainConfig(
    dataset="synthetic",
    model="mlp_hps",
    model_kwargs={"hidden": (16,)},
    method="scalarization",
    method_kwargs={"weights": [1.0, 0.0]},
    num_steps=20,
    steps_per_call=10,
    batch_size=16,
    progress=False,
)


@pytest.fixture(scope="module")
def dataset():
    return datasets.synthetic(
        classification_tasks(("a", "b"), 3), (4, 4, 1), num_train=64, num_test=32
    )


def test_each_swept_model_is_the_run_with_its_hyperparameters(dataset):
    grid = np.array([[1.0, 0.0], [0.25, 0.75]])
    sweep = train_sweep(CONFIG, {"weights": grid}, dataset=dataset)
    assert len(sweep) == 2 and sweep.hyperparams["weights"].shape == (2, 2)
    for k, weights in enumerate(grid):
        run = train(CONFIG.replace(method_kwargs={"weights": weights.tolist()}), dataset=dataset)
        swept_params = jax.tree.map(lambda x, k=k: np.asarray(x)[k], sweep.state.params)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
            swept_params,
            run.state.params,
        )
        assert sweep.results[k].keys() == run.results.keys()


def test_a_temperature_sweep_and_bad_grids(dataset):
    config = CONFIG.replace(method="uw_so", method_kwargs={})
    sweep = train_sweep(config, {"temperature": np.array([0.5, 5.0, 50.0])}, dataset=dataset)
    assert [set(r) for r in sweep.results] == [{"a", "b"}] * 3
    with pytest.raises(ValueError, match="no hyperparameter"):
        train_sweep(config, {"tau": np.ones(2)}, dataset=dataset)
    with pytest.raises(ValueError, match="same leading axis"):
        train_sweep(config, {"temperature": np.float32(1.0)}, dataset=dataset)
    with pytest.raises(ValueError, match="something to sweep"):
        train_sweep(config, {}, dataset=dataset)


def test_random_row_weights_go_before_the_swept_method(dataset):
    """The sweep builds the trainer's chain: random row weights first, as train() does."""
    config = CONFIG.replace(random_row_weights="normal")
    grid = np.array([[1.0, 0.0], [0.25, 0.75]])
    sweep = train_sweep(config, {"weights": grid}, dataset=dataset)
    run = train(config.replace(method_kwargs={"weights": grid[1].tolist()}), dataset=dataset)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(np.asarray(a)[1], b, rtol=1e-4, atol=1e-5),
        sweep.state.params,
        run.state.params,
    )
    with pytest.raises(ValueError, match="AdaTask"):
        train_sweep(CONFIG.replace(method="ew", method_kwargs={}, optimizer="adatask"),
                    {"weights": grid}, dataset=dataset)  # fmt: skip


@pytest.mark.parametrize(
    "optimizer, optimizer_kwargs",
    [("adam", {}), ("sgd", {"momentum": 0.9}), ("signum", {"beta": 0.9}), ("adatask", {})],
)
def test_a_learning_rate_grid_is_the_runs_with_those_learning_rates(
    dataset, optimizer, optimizer_kwargs
):
    config = CONFIG.replace(
        method="ew", method_kwargs={}, optimizer=optimizer, optimizer_kwargs=optimizer_kwargs
    )
    rates = [1e-3, 3e-2]
    sweep = train_sweep(config, learning_rate=rates, dataset=dataset)
    np.testing.assert_allclose(sweep.hyperparams["learning_rate"], rates, rtol=1e-6)
    for k, rate in enumerate(rates):
        run = train(config.replace(learning_rate=rate), dataset=dataset)
        jax.tree.map(
            lambda a, b, k=k: np.testing.assert_allclose(np.asarray(a)[k], b, rtol=1e-4, atol=1e-5),
            sweep.state.params,
            run.state.params,
        )


def test_method_hyperparameters_and_learning_rates_together(dataset):
    grid = np.array([[1.0, 0.0], [0.25, 0.75]])
    config = CONFIG.replace(optimizer="sgd", optimizer_kwargs={"momentum": 0.9})
    sweep = train_sweep(config, {"weights": grid}, learning_rate=[0.01, 0.1], dataset=dataset)
    run = train(
        config.replace(method_kwargs={"weights": grid[1].tolist()}, learning_rate=0.1),
        dataset=dataset,
    )
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(np.asarray(a)[1], b, rtol=1e-4, atol=1e-5),
        sweep.state.params,
        run.state.params,
    )
    with pytest.raises(ValueError, match="same leading axis"):
        train_sweep(config, {"weights": grid}, learning_rate=[0.01, 0.1, 1.0], dataset=dataset)
    uw = CONFIG.replace(method="uw", method_kwargs={})
    with pytest.raises(ValueError, match="separate calls"):
        train_sweep(uw, {"learning_rate": [0.1, 0.2]}, learning_rate=[0.1, 0.2], dataset=dataset)
    with pytest.raises(ValueError, match="unknown optimizer"):
        train_sweep(CONFIG.replace(optimizer="adamm"), learning_rate=[0.1], dataset=dataset)
