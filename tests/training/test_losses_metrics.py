"""Per-task losses, metrics and Δm on hand-computed values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtlx.training import Task, delta_m, finalize, losses, metric_stats, task_losses
from mtlx.training.loop import pad_batch


def test_cross_entropy_ignores_negative_labels():
    logits = jnp.log(jnp.array([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]]))
    labels = jnp.array([0, -1, 1])
    expected = -(np.log(0.5) + np.log(0.8)) / 2
    np.testing.assert_allclose(losses.cross_entropy(logits, labels), expected, rtol=1e-6)
    assert losses.cross_entropy(logits, jnp.full(3, -1)) == 0.0  # nothing labelled: 0, not NaN


def test_depth_l1_and_normal_cosine_use_valid_pixels_only():
    target = jnp.array([[[[2.0], [0.0]]]])  # second pixel: no measurement
    pred = jnp.array([[[[1.5], [9.0]]]])
    np.testing.assert_allclose(losses.depth_l1(pred, target), 0.5)
    n_true = jnp.array([[[[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]]])
    n_pred = jnp.array([[[[0.0, 3.0, 3.0], [1.0, 0.0, 0.0]]]])  # normalised inside
    np.testing.assert_allclose(losses.normal_cosine(n_pred, n_true), 1 - np.sqrt(0.5), rtol=1e-6)
    zero = losses.normal_cosine(jnp.zeros_like(n_pred), n_true)  # a zero prediction: finite
    assert np.isfinite(zero)


def test_task_losses_stacks_one_loss_per_task_and_checks_the_count():
    tasks = (Task("a", "classification", 2), Task("d", "depth"))
    batch = {"labels": jnp.array([[1], [0]]), "d": jnp.ones((2, 1, 1, 1))}
    outs = (jnp.zeros((2, 2)), jnp.zeros((2, 1, 1, 1)))
    np.testing.assert_allclose(task_losses(tasks, outs, batch), [np.log(2), 1.0], rtol=1e-6)
    with pytest.raises(ValueError, match="1 outputs for 2 tasks"):
        task_losses(tasks, outs[:1], batch)
    with pytest.raises(ValueError, match="no target for task 'x'"):
        Task("x").target({"image": 0}, 0)


def test_loss_scale_multiplies_the_training_loss_only():
    batch = {"labels": jnp.array([[1], [0]])}
    outs = (jnp.array([[0.0, 1.0], [2.0, 0.0]]),)
    plain = task_losses((Task("a", "classification", 2),), outs, batch)
    scaled = task_losses((Task("a", "classification", 2, loss_scale=100.0),), outs, batch)
    np.testing.assert_allclose(scaled, 100.0 * plain, rtol=1e-6)
    stats = Task("a", "classification", 2, loss_scale=100.0).stats(outs[0], batch, 0)
    assert Task("a", "classification", 2).finalize(stats) == {"accuracy": 1.0}
    for bad in (0.0, -1.0, float("nan"), float("inf"), True, "2"):
        with pytest.raises(ValueError, match="loss_scale must be a positive finite"):
            Task("a", "classification", 2, loss_scale=bad)


def test_metrics_accumulate_over_batches():
    tasks = (
        Task("cls", "classification", 3),
        Task("seg", "segmentation", 2),
        Task("depth", "depth"),
        Task("normal", "normal"),
    )
    seg_labels = jnp.array([[[0, 1], [1, -1]]])
    seg_logits = jax.nn.one_hot(jnp.array([[[0, 0], [1, 1]]]), 2)  # predicts 0 0 / 1 1
    depth_t = jnp.array([[[[1.0], [2.0]], [[0.0], [4.0]]]])
    depth_p = jnp.array([[[[1.5], [2.0]], [[7.0], [3.0]]]])
    normal_t = jnp.broadcast_to(jnp.array([0.0, 0.0, 1.0]), (1, 2, 2, 3))
    angles = np.radians([0.0, 10.0, 20.0, 60.0])
    normal_p = jnp.stack([jnp.zeros(4), jnp.sin(angles), jnp.cos(angles)], -1).reshape(1, 2, 2, 3)
    batch = {"labels": jnp.array([[2]]), "seg": seg_labels, "depth": depth_t, "normal": normal_t}
    outs = (jnp.array([[0.0, 0.0, 1.0]]), seg_logits, depth_p, normal_p)
    stats = jax.jit(lambda o, b: metric_stats(tasks, o, b))(outs, batch)
    twice = jax.tree.map(lambda a: a + a, stats)  # two identical batches
    r = finalize(tasks, twice)
    assert r["cls"] == {"accuracy": 1.0}
    # confusion: label 0 -> pred 0 (1); label 1 -> pred 0 (1), pred 1 (1). IoU0 = 1/2, IoU1 = 1/2.
    np.testing.assert_allclose(r["seg"]["miou"], 0.5)
    np.testing.assert_allclose(r["seg"]["pixel_acc"], 2 / 3)
    np.testing.assert_allclose(r["depth"]["abs_err"], (0.5 + 0 + 1) / 3, rtol=1e-6)
    np.testing.assert_allclose(r["depth"]["rel_err"], (0.5 + 0 + 0.25) / 3, rtol=1e-6)
    np.testing.assert_allclose(r["normal"]["mean_angle"], 22.5, rtol=1e-4)
    np.testing.assert_allclose(r["normal"]["median_angle"], 10.0, atol=0.05)  # histogram bins
    assert r["normal"]["within_11.25"] == 0.5 and r["normal"]["within_30"] == 0.75


def test_padding_rows_are_ignored_by_metrics():
    tasks = (Task("cls", "classification", 2),)
    batch = {"image": np.ones((3, 2), np.float32), "labels": np.array([[1], [1], [0]], np.int32)}
    padded = pad_batch(batch, 5)
    assert padded["labels"][3:].tolist() == [[-1], [-1]] and (padded["image"][3:] == 0).all()
    outs = (jnp.array([[0.0, 1.0]] * 5),)
    r = finalize(tasks, metric_stats(tasks, outs, padded))
    np.testing.assert_allclose(r["cls"]["accuracy"], 2 / 3)


def test_delta_m_sign_convention_and_errors():
    base = {"a": {"accuracy": 0.8}, "d": {"abs_err": 0.5}}
    res = {"a": {"accuracy": 0.88}, "d": {"abs_err": 0.45}}  # +10 % and 10 % lower error
    np.testing.assert_allclose(delta_m(res, base), 10.0)
    np.testing.assert_allclose(delta_m(base, base), 0.0)
    with pytest.raises(ValueError, match="no result"):
        delta_m({"a": {"accuracy": 1.0}}, base)
    with pytest.raises(ValueError, match="is 0"):
        delta_m(res, {"a": {"accuracy": 0.0}})
