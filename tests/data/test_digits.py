"""Multi-Digits: the task columns, the regression task "sum", and training on it."""

import numpy as np
import pytest

from mtlx import data


def test_sum_is_a_float_regression_target_beside_the_label_block():
    out = data.load_multi_digits("train", tasks=("left", "sum", "right"), num_examples=50, seed=1)
    assert out["labels"].shape == (50, 3) and out["labels"].dtype == np.int32
    assert out["sum"].dtype == np.float32 and out["sum"].shape == (50,)
    np.testing.assert_array_equal(out["sum"], out["labels"][:, 0] + out["labels"][:, 2])
    np.testing.assert_array_equal(out["labels"][:, 1], out["sum"].astype(np.int32))
    assert 0 <= out["sum"].min() and out["sum"].max() <= 18
    # the classification columns do not depend on whether "sum" is asked for
    plain = data.load_multi_digits("train", tasks=("left", "right"), num_examples=50, seed=1)
    np.testing.assert_array_equal(plain["labels"], out["labels"][:, [0, 2]])
    assert "sum" not in plain


def test_task_layout_marks_sum_as_regression():
    assert "sum" in data.DIGITS_TASKS and "sum" not in data.DIGITS_NUM_CLASSES
    assert data.dataset_tasks("digits", tasks=("left", "sum")) == (
        data.TaskSpec("left", "classification", 10),
        data.TaskSpec("sum", "regression", None),
    )
    with pytest.raises(ValueError, match="unknown tasks"):
        data.dataset_tasks("digits", tasks=("product",))


def test_trainer_regresses_the_sum():
    pytest.importorskip("flax")
    from flax import nnx

    from mtlx import models
    from mtlx.training import TrainConfig, datasets, train

    ds = datasets.load("digits", tasks=("left", "sum"), num_train=256, num_test=128)
    assert [t.kind for t in ds.tasks] == ["classification", "regression"]
    rngs = nnx.Rngs(0)
    encoder = models.MLP(128, (64,), rngs=rngs)
    heads = models.PerTaskHeads(
        {"left": nnx.Linear(64, 10, rngs=rngs), "sum": nnx.Linear(64, 1, rngs=rngs)}
    )
    config = TrainConfig(
        num_steps=200, steps_per_call=50, batch_size=32, learning_rate=1e-2, progress=False
    )
    result = train(config, dataset=ds, model=models.MultiTaskModel(encoder, heads))
    mae = result.results["sum"]["mae"]
    # predicting the mean sum (9) has an MAE of about 3.3; a trained head does better
    baseline = float(np.mean(np.abs(ds.test["sum"] - ds.train["sum"].mean())))
    assert np.isfinite(mae) and mae < baseline
    assert 0.0 <= result.results["left"]["accuracy"] <= 1.0
