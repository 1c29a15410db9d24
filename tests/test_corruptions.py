"""mtlx.data.corruptions: shapes, dtypes, ranges, determinism, severity order, errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mtlx import data
from mtlx.data import corruptions

RANDOM = ("gaussian_noise", "shot_noise", "impulse_noise")


@pytest.fixture(scope="module")
def digits_images():
    return data.load_multi_digits("test", num_examples=200, seed=0)["image"]


def test_names_parameters_and_exports():
    assert set(corruptions.PARAMETERS) == set(corruptions.CORRUPTIONS)
    assert all(len(p) == 5 for p in corruptions.PARAMETERS.values())
    assert data.IMAGE_CORRUPTIONS == corruptions.CORRUPTIONS
    assert data.corrupt is corruptions.corrupt
    # CIFAR-10-C's values (make_cifar_c.py), spot checks
    assert corruptions.PARAMETERS["gaussian_noise"] == (0.04, 0.06, 0.08, 0.09, 0.10)
    assert corruptions.PARAMETERS["jpeg_compression"] == (80, 65, 58, 50, 40)


@pytest.mark.parametrize("name", corruptions.CORRUPTIONS)
def test_severity_increases_the_distortion(name, digits_images):
    x = digits_images
    mse = [float(np.mean((corruptions.corrupt(x, name, s, seed=3) - x) ** 2)) for s in range(1, 6)]
    assert mse[0] > 0, name
    assert all(b > a for a, b in zip(mse, mse[1:])), (name, mse)


@pytest.mark.parametrize("name", corruptions.CORRUPTIONS)
@pytest.mark.parametrize(
    "shape,dtype",
    [((8, 16), np.float32), ((8, 16, 1), np.float64), ((3, 8, 16, 1), np.float32),
     ((2, 12, 10, 3), np.uint8)],
)  # fmt: skip
def test_shape_dtype_and_range_preserved(name, shape, dtype):
    rng = np.random.default_rng(0)
    x = rng.random(shape)
    x = (x * 255).round().astype(dtype) if dtype == np.uint8 else x.astype(dtype)
    y = corruptions.corrupt(x, name, 5, seed=1)
    assert y.shape == x.shape and y.dtype == x.dtype
    hi = 255 if dtype == np.uint8 else 1.0
    assert y.min() >= 0 and y.max() <= hi and np.all(np.isfinite(y))


def test_custom_value_range_is_respected():
    x = np.random.default_rng(0).uniform(-1, 1, (4, 8, 8, 1)).astype(np.float32)
    for name in corruptions.CORRUPTIONS:
        y = corruptions.corrupt(x, name, 3, value_range=(-1.0, 1.0))
        assert y.min() >= -1 and y.max() <= 1, name


@pytest.mark.parametrize("name", corruptions.CORRUPTIONS)
def test_deterministic_given_the_seed(name, digits_images):
    x = digits_images[:20]
    a = corruptions.corrupt(x, name, 3, seed=7)
    np.testing.assert_array_equal(a, corruptions.corrupt(x, name, 3, seed=7))
    b = corruptions.corrupt(x, name, 3, seed=8)
    if name in RANDOM:
        assert not np.array_equal(a, b)
    else:
        np.testing.assert_array_equal(a, b)


def test_per_image_statistics_in_a_batch(digits_images):
    # contrast shrinks every image towards its own mean: a batch equals the images one by one
    x = digits_images[:5]
    batch = corruptions.corrupt(x, "contrast", 4)
    one = np.stack([corruptions.corrupt(im, "contrast", 4) for im in x])
    np.testing.assert_allclose(batch, one, rtol=1e-6)
    np.testing.assert_allclose(batch.mean(axis=(1, 2)), x.mean(axis=(1, 2)), atol=1e-5)


def test_brightness_on_rgb_keeps_hue():
    x = np.array([[[[0.2, 0.4, 0.1], [0.0, 0.0, 0.0]]]], np.float64)  # (1, 1, 2, 3)
    y = corruptions.corrupt(x, "brightness", 5)  # v + 0.3
    np.testing.assert_allclose(y[0, 0, 0], [0.35, 0.7, 0.175])  # scaled by 0.7 / 0.4
    np.testing.assert_allclose(y[0, 0, 1], [0.3, 0.3, 0.3])  # black becomes grey


def test_impulse_noise_sets_extremes():
    x = np.full((50, 8, 16, 1), 0.5, np.float32)
    y = corruptions.corrupt(x, "impulse_noise", 5, seed=0)
    changed = y != 0.5
    assert set(np.unique(y[changed])) <= {0.0, 1.0}
    assert abs(changed.mean() - 0.07) < 0.01


def test_corrupt_images_leaves_targets():
    source = data.load_multi_digits("train", num_examples=16)
    out = corruptions.corrupt_images(source, "gaussian_blur", 2)
    assert out["labels"] is source["labels"]
    assert not np.array_equal(out["image"], source["image"])
    with pytest.raises(ValueError, match="no 'pixels' array"):
        corruptions.corrupt_images(source, "contrast", 1, key="pixels")


def test_errors_are_clear():
    x = np.zeros((8, 8), np.float32)
    with pytest.raises(ValueError, match="unknown corruption 'fog'; choose from gaussian_noise"):
        corruptions.corrupt(x, "fog", 1)
    for bad in (0, 6, -1):
        with pytest.raises(ValueError, match="severity must be in 1..5; got"):
            corruptions.corrupt(x, "contrast", bad)
    for bad in (2.0, True, "3"):
        with pytest.raises(ValueError, match="severity must be an int"):
            corruptions.corrupt(x, "contrast", bad)
    with pytest.raises(ValueError, match=r"\(H, W\), \(H, W, C\) or \(N, H, W, C\)"):
        corruptions.corrupt(np.zeros((8,)), "contrast", 1)
    with pytest.raises(ValueError, match="lo < hi"):
        corruptions.corrupt(x, "contrast", 1, value_range=(1.0, 1.0))
    with pytest.raises(ValueError, match="1 or 3 channels"):
        corruptions.corrupt(np.zeros((8, 8, 2)), "jpeg_compression", 1)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    images=hnp.arrays(
        np.float32,
        st.tuples(
            st.integers(1, 3), st.integers(4, 12), st.integers(4, 12), st.sampled_from([1, 3])
        ),
        elements=st.floats(0.0, 1.0, width=32),
    ),
    name=st.sampled_from(corruptions.CORRUPTIONS),
    severity=st.integers(1, 5),
    seed=st.integers(0, 2**31 - 1),
)
def test_any_image_stays_in_range_and_shape(images, name, severity, seed):
    y = corruptions.corrupt(images, name, severity, seed=seed)
    assert y.shape == images.shape and y.dtype == images.dtype
    assert np.all(np.isfinite(y)) and y.min() >= 0.0 and y.max() <= 1.0
    np.testing.assert_array_equal(y, corruptions.corrupt(images, name, severity, seed=seed))
