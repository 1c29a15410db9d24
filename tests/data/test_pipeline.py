"""mtlx.data.batches: shuffling, epochs, resumption, evaluation passes, record sources."""

import itertools

import numpy as np
import pytest

pytest.importorskip("grain")

from mtlx import data  # noqa: E402


def _arrays(n=10):
    return {
        "x": np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32),
        "labels": np.stack([np.arange(n), -np.arange(n)], axis=1).astype(np.int32),
    }


def _ids(batch):
    return batch["labels"][:, 0].tolist()


def test_batches_shapes_and_each_epoch_is_a_permutation():
    stream = data.batches(_arrays(12), 4, seed=3)
    assert stream.steps_per_epoch == 3
    epochs = [sum((_ids(next(stream)) for _ in range(3)), []) for _ in range(3)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(12))
    assert epochs[0] != epochs[1]  # reshuffled each epoch
    batch = stream[0]
    assert batch["x"].shape == (4, 3) and batch["x"].dtype == np.float32
    assert batch["labels"].shape == (4, 2) and batch["labels"].dtype == np.int32
    np.testing.assert_array_equal(batch["x"][:, 0], batch["labels"][:, 0])  # rows stay together


def test_drop_remainder_never_straddles_epochs():
    stream = data.batches(_arrays(10), 4, seed=0)
    assert stream.steps_per_epoch == 2
    first = _ids(stream[0]) + _ids(stream[1])
    assert len(set(first)) == 8  # 2 examples dropped this epoch, none repeated


def test_seed_determines_the_stream():
    a = [_ids(b) for b in itertools.islice(data.batches(_arrays(), 5, seed=1), 6)]
    b = [_ids(b) for b in itertools.islice(data.batches(_arrays(), 5, seed=1), 6)]
    c = [_ids(b) for b in itertools.islice(data.batches(_arrays(), 5, seed=2), 6)]
    assert a == b and a != c


def test_resume_from_state_is_exact():
    stream = data.batches(_arrays(), 3, seed=7)
    for _ in range(5):
        next(stream)
    state = stream.get_state()
    assert state == {"step": 5}
    expected = [_ids(next(stream)) for _ in range(6)]
    resumed = data.batches(_arrays(), 3, seed=7).set_state({"step": np.int64(5)})
    assert [_ids(next(resumed)) for _ in range(6)] == expected
    assert [_ids(stream[5 + i]) for i in range(6)] == expected  # random access agrees


def test_evaluation_pass_is_ordered_and_complete():
    stream = data.batches(_arrays(10), 4, shuffle=False, num_epochs=1, drop_remainder=False)
    assert len(stream) == 3
    assert [_ids(b) for b in stream] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    with pytest.raises(StopIteration):
        next(stream)
    with pytest.raises(IndexError):
        stream[3]


def test_record_source_and_transform():
    records = [{"image": np.full((2, 2), i, np.uint8), "meta": {"id": i}} for i in range(6)]

    def to_float(batch):
        return {**batch, "image": batch["image"].astype(np.float32) / 255.0}

    stream = data.batches(records, 4, shuffle=False, transform=to_float)
    batch = next(stream)
    assert batch["image"].shape == (4, 2, 2) and batch["image"].dtype == np.float32
    np.testing.assert_array_equal(batch["meta"]["id"], [0, 1, 2, 3])


def test_threads_give_the_same_stream():
    plain = [_ids(b) for b in itertools.islice(data.batches(_arrays(), 3, seed=4), 9)]
    threaded = data.batches(_arrays(), 3, seed=4, num_threads=2)
    try:
        got = [_ids(next(threaded)) for _ in range(4)]
        threaded.set_state({"step": 2})  # a jump discards batches read ahead
        got = got[:2] + [_ids(b) for b in itertools.islice(threaded, 7)]
    finally:
        threaded.close()
    assert got == plain


def test_multi_digits_default_runs_offline():
    train = data.batches(data.load_multi_digits("train"), 64, seed=0)
    batch = next(train)
    assert batch["image"].shape == (64, 8, 16, 1) and batch["labels"].shape == (64, 2)


@pytest.mark.parametrize(
    "source, kwargs, match",
    [
        ({"a": np.zeros(3), "b": np.zeros(4)}, {}, "differ in length"),
        ({}, {}, "no arrays"),
        (_arrays(3), {}, "exceeds the 3 examples"),
        (_arrays(3), {"batch_size": 0}, "positive integer"),
        (_arrays(3), {"batch_size": 1, "num_epochs": 0}, "num_epochs"),
    ],
)
def test_bad_arguments_raise_clear_errors(source, kwargs, match):
    kwargs = {"batch_size": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        data.batches(source, **kwargs)


def test_non_source_raises_type_error():
    with pytest.raises(TypeError, match="random-access"):
        data.batches(iter([{"a": 1}]), 1)
