"""The trainer with optimizer="adatask": mtlx.adatask alone replaces the method and the optimizer."""

import jax
import numpy as np
import pytest

import mtlx
from mtlx.training import TrainConfig, classification_tasks, datasets, make_tx, train

# The default config (EW, an MLP with hard parameter sharing) on small synthetic data.
CONFIG = TrainConfig(
    dataset="synthetic",
    model_kwargs={"hidden": (16,)},
    optimizer="adatask",
    learning_rate=1e-2,
    num_steps=40,
    steps_per_call=20,
    log_every=20,
    batch_size=16,
    progress=False,
)


@pytest.fixture(scope="module")
def dataset():
    return datasets.synthetic(
        classification_tasks(("a", "b"), 3), (4, 4, 1), num_train=64, num_test=32
    )


def test_trains_with_adatask_alone(dataset):
    run = train(CONFIG, dataset=dataset)
    assert set(run.results) == {"a", "b"}
    assert int(run.state.step) == CONFIG.num_steps
    adatask_state, lr_state = run.state.opt_state
    assert isinstance(adatask_state, mtlx.ScaleByAdaTaskState)
    assert int(adatask_state.count) == CONFIG.num_steps
    for moment, param in zip(
        jax.tree.leaves(adatask_state.mu), jax.tree.leaves(run.state.params), strict=True
    ):
        assert moment.shape == (2, *param.shape)  # one first moment per task, heads included
    losses = [r for r in run.history if "train/loss/a" in r]
    for task in ("a", "b"):
        assert losses[-1][f"train/loss/{task}"] < losses[0][f"train/loss/{task}"]
    # The same run as the caller-built chain, with the optimizer's kwargs forwarded.
    config = CONFIG.replace(optimizer_kwargs={"b1": 0.5}, num_steps=20)
    by_name = train(config, dataset=dataset)
    by_hand = train(config, dataset=dataset, tx=mtlx.adatask(1e-2, b1=0.5, num_tasks=2))
    for a, b in zip(
        jax.tree.leaves(by_name.state.params), jax.tree.leaves(by_hand.state.params), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_adatask_takes_no_other_method():
    make_tx(CONFIG.replace(method="mean"), 2)  # the plain sum it replaces: accepted
    make_tx(CONFIG.replace(method="EW"), 2)
    with pytest.raises(ValueError, match="replaces both the weighting method and the optimizer"):
        make_tx(CONFIG.replace(method="pcgrad"), 2)
