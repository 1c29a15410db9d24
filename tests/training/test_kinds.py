"""Task kinds: each kind's loss, metrics and directions; names, objects and new kinds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtlx.training import (
    Classification,
    Depth,
    Normal,
    Regression,
    Segmentation,
    Task,
    TaskKind,
    TrainConfig,
    datasets,
    delta_m,
    finalize,
    get_kind,
    kind_names,
    metric_stats,
    per_example_losses,
    register_kind,
    task_losses,
    train,
)
from mtlx.training import kinds as kinds_lib


def _roundtrip(task, output, target, mask=None):
    """Loss, and metrics from the statistics of two identical batches (summed)."""
    kind = task.kind
    loss = jax.jit(lambda o, t: kind.loss(o, t, num_classes=task.num_classes, mask=mask))(
        output, target
    )
    stats = kind.stats(output, target, num_classes=task.num_classes, mask=mask)
    twice = jax.tree.map(lambda a: np.asarray(a + a), stats)
    return float(loss), kind.finalize(twice, num_classes=task.num_classes)


def test_every_kind_is_registered_by_name():
    assert set(kind_names()) >= {"classification", "segmentation", "depth", "normal", "regression"}
    for name, cls in [
        ("classification", Classification),
        ("segmentation", Segmentation),
        ("depth", Depth),
        ("normal", Normal),
        ("regression", Regression),
    ]:
        kind = Task("t", name).kind
        assert isinstance(kind, cls) and kind == name and kind == cls()
        assert get_kind(cls) == kind  # a class is instantiated with its defaults


def test_classification_loss_metric_direction():
    task = Task("c", "classification", 3)
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.2], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]))
    labels = jnp.array([0, 2, -1])  # the last one is ignored
    loss, metrics = _roundtrip(task, logits, labels)
    np.testing.assert_allclose(loss, -(np.log(0.5) + np.log(0.1)) / 2, rtol=1e-6)
    assert metrics == {"accuracy": 0.5}
    assert task.kind.higher_is_better("accuracy") and task.output_size == 3
    # A mask leaves examples out of both.
    loss, metrics = _roundtrip(task, logits, labels, mask=jnp.array([True, False, True]))
    np.testing.assert_allclose(loss, -np.log(0.5), rtol=1e-6)
    assert metrics == {"accuracy": 1.0}


def test_segmentation_loss_metric_direction():
    task = Task("s", "segmentation", 2)
    labels = jnp.array([[[0, 1], [1, -1]]])
    logits = jax.nn.one_hot(jnp.array([[[0, 0], [1, 1]]]), 2) * 10.0
    loss, metrics = _roundtrip(task, logits, labels)
    expected = np.mean([np.log1p(np.exp(-10.0)), np.log1p(np.exp(10.0)), np.log1p(np.exp(-10.0))])
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    np.testing.assert_allclose(metrics["miou"], 0.5)  # IoU 1/2 for both classes
    np.testing.assert_allclose(metrics["pixel_acc"], 2 / 3)
    assert task.kind.directions() == {"miou": True, "pixel_acc": True}


def test_depth_loss_metric_direction():
    task = Task("d", "depth")
    target = jnp.array([[[[1.0], [2.0]], [[0.0], [4.0]]]])
    pred = jnp.array([[[[1.5], [2.0]], [[7.0], [3.0]]]])
    loss, metrics = _roundtrip(task, pred, target)
    np.testing.assert_allclose(loss, 0.5, rtol=1e-6)  # (0.5 + 0 + 1) / 3 valid pixels
    np.testing.assert_allclose(metrics["abs_err"], 0.5, rtol=1e-6)
    np.testing.assert_allclose(metrics["rel_err"], (0.5 + 0 + 0.25) / 3, rtol=1e-6)
    assert not task.kind.higher_is_better("abs_err") and task.output_size == 1


def test_normal_loss_metric_direction():
    task = Task("n", "normal")
    target = jnp.broadcast_to(jnp.array([0.0, 0.0, 1.0]), (1, 2, 2, 3))
    angles = np.radians([0.0, 10.0, 20.0, 60.0])
    pred = jnp.stack([jnp.zeros(4), jnp.sin(angles), jnp.cos(angles)], -1).reshape(1, 2, 2, 3)
    loss, metrics = _roundtrip(task, pred, target)
    np.testing.assert_allclose(loss, np.mean(1 - np.cos(angles)), rtol=1e-5)
    np.testing.assert_allclose(metrics["mean_angle"], 22.5, rtol=1e-4)
    np.testing.assert_allclose(metrics["median_angle"], 10.0, atol=0.05)
    assert metrics["within_11.25"] == 0.5 and metrics["within_30"] == 0.75
    assert not task.kind.higher_is_better("mean_angle")
    assert task.kind.higher_is_better("within_22.5") and task.output_size == 3


def test_regression_loss_metric_direction():
    task = Task("r", Regression(rmse=True))
    target = jnp.array([1.0, 2.0, jnp.nan, 4.0])  # NaN: missing
    pred = jnp.array([[1.5], [2.0], [100.0], [2.0]])  # (N, 1) against (N,)
    loss, metrics = _roundtrip(task, pred, target)
    np.testing.assert_allclose(loss, (0.5 + 0 + 2) / 3, rtol=1e-6)
    np.testing.assert_allclose(metrics["mae"], (0.5 + 0 + 2) / 3, rtol=1e-6)
    np.testing.assert_allclose(metrics["rmse"], np.sqrt((0.25 + 0 + 4) / 3), rtol=1e-6)
    assert task.kind.directions() == {"mae": False, "rmse": False}
    assert Task("r", "regression").kind.directions() == {"mae": False}  # RMSE is optional
    _, plain = _roundtrip(Task("r", "regression"), pred, target)
    assert set(plain) == {"mae"}
    # Vector targets: (N, D) against (N, D); num_classes is the output size.
    vec = Task("v", "regression", 2)
    assert vec.output_size == 2
    loss, _ = _roundtrip(vec, jnp.zeros((3, 2)), jnp.ones((3, 2)))
    np.testing.assert_allclose(loss, 1.0)
    with pytest.raises(ValueError, match="does not match its target"):
        vec.kind.loss(jnp.zeros((3, 3)), jnp.ones((3, 2)))
    # Nothing valid: a loss of 0 and a NaN metric, not 0 / 0.
    loss, metrics = _roundtrip(task, jnp.zeros(2), jnp.full(2, jnp.nan))
    assert loss == 0.0 and np.isnan(metrics["mae"])


def test_task_losses_metric_stats_and_per_example_losses_dispatch_on_kinds():
    tasks = (Task("c", "classification", 2), Task("r", "regression"))
    batch = {"labels": jnp.array([[1], [0], [1]]), "r": jnp.array([1.0, -1.0, 3.0])}
    outs = (jnp.zeros((3, 2)), jnp.zeros((3, 1)))
    np.testing.assert_allclose(task_losses(tasks, outs, batch), [np.log(2), 5 / 3], rtol=1e-6)
    per_example = per_example_losses(tasks, outs, batch)
    assert per_example.shape == (3, 2)
    np.testing.assert_allclose(per_example.mean(0), task_losses(tasks, outs, batch), rtol=1e-6)
    np.testing.assert_allclose(per_example[:, 1], [1.0, 1.0, 3.0])
    r = finalize(tasks, metric_stats(tasks, outs, batch))
    assert r == {"c": {"accuracy": pytest.approx(1 / 3)}, "r": {"mae": pytest.approx(5 / 3)}}


def test_unknown_kinds_and_bad_tasks_fail_clearly():
    with pytest.raises(ValueError, match="task 'x': unknown task kind 'clasification'.*regression"):
        Task("x", "clasification")
    with pytest.raises(ValueError, match="TaskKind object; got int"):
        Task("x", 3)
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        Task("x", "classification", 0)
    with pytest.raises(ValueError, match="has no metric 'miou'"):
        Task("x").kind.higher_is_better("miou")


def test_delta_m_reads_directions_from_the_kinds():
    tasks = (Task("a", "classification", 2), Task("r", "regression"))
    base = {"a": {"accuracy": 0.8}, "r": {"mae": 2.0}}
    res = {"a": {"accuracy": 0.88}, "r": {"mae": 1.6}}  # +10 % and 20 % lower error
    np.testing.assert_allclose(delta_m(res, base, tasks), 15.0)
    np.testing.assert_allclose(delta_m(res, base), 15.0)  # by metric name
    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        delta_m({"a": {"f1": 0.5}}, {"a": {"f1": 0.4}})


def test_a_new_kind_is_one_class():
    @register_kind
    class Hinge(TaskKind):
        """Binary targets in {-1, 1}: hinge loss, error rate (lower is better)."""

        name = "hinge_test"

        def directions(self):
            return {"error": False}

        def output_size(self, num_classes):
            return 1

        def loss(self, output, target, *, num_classes=None, mask=None):
            return jnp.mean(jnp.maximum(0.0, 1.0 - output[:, 0] * target))

        def stats(self, output, target, *, num_classes=None, mask=None):
            wrong = jnp.sign(output[:, 0]) != target
            return {"wrong": jnp.sum(wrong), "count": jnp.asarray(target.shape[0])}

        def finalize(self, stats, *, num_classes=None):
            return {"error": float(stats["wrong"]) / float(stats["count"])}

        def synthetic_target(self, rng, n, spatial_shape, num_classes):
            return rng.choice([-1.0, 1.0], n).astype(np.float32)

    try:
        tasks = (Task("h", "hinge_test"), Task("c", "classification", 3))
        data = datasets.synthetic(tasks, (6,), num_train=32, num_test=16)
        assert data.train["h"].shape == (32,) and data.train["c"].shape == (32,)
        config = TrainConfig(
            model_kwargs={"hidden": (8,)},
            num_steps=4,
            steps_per_call=2,
            batch_size=8,
            progress=False,
            baselines={"h": {"error": 0.5}},
        )
        result = train(config, dataset=data)
        assert set(result.results) == {"h", "c"} and "error" in result.results["h"]
        assert np.isfinite(result.delta_m)
    finally:
        kinds_lib._KINDS.pop("hinge_test", None)


def test_regression_tasks_train_end_to_end():
    tasks = (Task("sum", "regression"), Task("first", Regression(rmse=True)))
    data = datasets.synthetic(tasks, (5,), num_train=128, num_test=64, seed=1)
    for split in (data.train, data.test):  # learnable targets
        split["sum"][:] = split["image"].sum(axis=1)
        split["first"][:] = 2.0 * split["image"][:, 0]
    config = TrainConfig(
        model_kwargs={"hidden": (32,)},  # out_features = 1 from the tasks
        num_steps=200,
        steps_per_call=50,
        batch_size=32,
        learning_rate=1e-2,
        progress=False,
    )
    result = train(config, dataset=data)
    assert set(result.results["first"]) == {"mae", "rmse"}
    predict_zero = np.abs(data.test["sum"]).mean()  # the MAE of an untrained output near 0
    assert result.results["sum"]["mae"] < 0.25 * predict_zero
