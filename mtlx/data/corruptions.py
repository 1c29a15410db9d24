"""Common image corruptions in NumPy / PIL, after CIFAR-10-C (Hendrycks & Dietterich, ICLR 2019).

Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations" (ICLR 2019) define 15 corruptions at 5 severities; their ``make_cifar_c.py``
(``github.com/hendrycks/robustness``, ``ImageNet-C/create_c``) gives each severity's parameter for
32 x 32 images. Eight of them are here, with **the CIFAR-10-C parameters** (:data:`PARAMETERS`;
one change, pixelate at severities 4-5, see the note); on images scaled to ``[0, 1]``:

=================== ====================================================== =====================
name                corruption                                             parameter, sev. 1..5
=================== ====================================================== =====================
gaussian_noise      ``x + N(0, c²)``                                       c = .04 .06 .08 .09 .10
shot_noise          ``Poisson(c x) / c``                                   c = 500 250 100 75 50
impulse_noise       each value set to 0 or 1 (½ each) with prob. c         c = .01 .02 .03 .05 .07
gaussian_blur       Gaussian filter, std c pixels (``mode="nearest"``)     c = .4 .6 .7 .8 1
contrast            ``(x - mean) c + mean`` (per image and channel)        c = .75 .5 .4 .3 .15
brightness          HSV value ``v + c`` (grey images: ``x + c``)           c = .05 .1 .15 .2 .3
pixelate            box-downsample to ``int(c size)``, box-upsample        c = .95 .9 .85 .7 .6
jpeg_compression    JPEG at quality c (PIL; values pass through 8 bits)    c = 80 65 58 50 40
=================== ====================================================== =====================

every result clipped to ``[0, 1]`` and mapped back. Defocus blur (a disk kernel) is replaced by
the Gaussian blur of CIFAR-10-C's extra corruptions.

.. note:: **Scale.** One parameter is changed for small images: pixelate's severities 4 and 5 use
  0.7 and 0.6 instead of CIFAR-10-C's 0.75 and 0.65. On an 8-pixel-high image ``int(8 * 0.75) ==
  int(8 * 0.8)`` and 0.65's 10 x 5 grid aliases less than 0.75's 12 x 6, so with the original
  factors the mean squared change of Multi-Digits images *falls* from severity 4 to 5 (0.038 to
  0.032); with 0.7 / 0.6 it grows (0.043, 0.050). Everything else is not rescaled. The intensity corruptions
  (noise, contrast, brightness) and the pixelation factor are independent of image size, so they
  mean the same on an 8 x 16 Multi-Digits image as on CIFAR-10. The blur's std is in *pixels*: on
  an 8 x 8 digit a std of one pixel covers a larger part of the digit than on a 32 x 32 CIFAR
  image (roughly CIFAR-10-C's blur at 4x the std), and JPEG's 8 x 8 blocks each cover a whole
  digit. Severities therefore order the distortion within a corruption; they are not calibrated
  across corruptions or against CIFAR-10-C error rates.

Images are ``(H, W)``, ``(H, W, C)`` or ``(N, H, W, C)`` arrays; per-image statistics (contrast's
mean, JPEG, pixelation) are per image of a batch. Float images are taken in ``[0, 1]`` and integer
images in ``[0, 255]`` unless ``value_range`` says otherwise; the output has the input's dtype and
shape, and its values lie in that range. The random corruptions (the three noises) are a pure
function of ``seed``; the others ignore it.

This module imports NumPy only; SciPy (blur) and Pillow (pixelate, JPEG) are imported on use.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np

__all__ = ["CORRUPTIONS", "PARAMETERS", "SEVERITIES", "corrupt", "corrupt_images"]

CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "gaussian_blur",
    "contrast",
    "brightness",
    "pixelate",
    "jpeg_compression",
)
SEVERITIES = (1, 2, 3, 4, 5)
# make_cifar_c.py (Hendrycks & Dietterich, ICLR 2019), severities 1..5; pixelate's last two
# (0.75, 0.65 there) are lowered so the distortion grows with severity on 8-pixel-high images.
PARAMETERS: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "pixelate": (0.95, 0.9, 0.85, 0.7, 0.6),
    "jpeg_compression": (80, 65, 58, 50, 40),
}


# --- the corruptions on float (N, H, W, C) images in [0, 1] ------------------------------------


def _gaussian_noise(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    return x + rng.normal(scale=c, size=x.shape)


def _shot_noise(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    return rng.poisson(np.clip(x, 0.0, 1.0) * c) / c


def _impulse_noise(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    flipped = rng.random(x.shape) < c
    salt = rng.random(x.shape) < 0.5
    return np.where(flipped, salt.astype(x.dtype), x)


def _gaussian_blur(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    from scipy import ndimage

    return ndimage.gaussian_filter(x, sigma=(0.0, c, c, 0.0), mode="nearest", truncate=4.0)


def _contrast(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    means = x.mean(axis=(1, 2), keepdims=True)
    return (x - means) * c + means


def _brightness(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    if x.shape[-1] != 3:  # grey (or non-RGB) channels: the HSV value of a grey pixel is itself
        return x + c
    # HSV with hue and saturation fixed: RGB scales by v' / v (v = max channel); black becomes grey.
    v = x.max(axis=-1, keepdims=True)
    v_new = np.clip(v + c, 0.0, 1.0)
    safe = np.where(v > 0, v, 1.0)
    return np.where(v > 0, x * (v_new / safe), v_new)


def _pil_per_image(x: np.ndarray, fn: Callable[..., np.ndarray]) -> np.ndarray:
    return np.stack([fn(image) for image in x])


def _pixelate(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    h, w = x.shape[1:3]
    small = (max(1, int(w * c)), max(1, int(h * c)))  # PIL sizes are (width, height)

    def one(image: np.ndarray) -> np.ndarray:
        channels = []
        for ch in range(image.shape[-1]):  # mode "F": no 8-bit rounding of float images
            im = Image.fromarray(image[..., ch].astype(np.float32), mode="F")
            im = im.resize(small, Image.BOX).resize((w, h), Image.BOX)
            channels.append(np.asarray(im, np.float32))
        return np.stack(channels, axis=-1)

    return _pil_per_image(x, one)


def _jpeg_compression(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    if x.shape[-1] not in (1, 3):
        raise ValueError(f"jpeg_compression needs 1 or 3 channels; got {x.shape[-1]}.")

    def one(image: np.ndarray) -> np.ndarray:
        pixels = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
        im = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
        buffer = io.BytesIO()
        im.save(buffer, format="JPEG", quality=int(c))
        buffer.seek(0)
        out = np.asarray(Image.open(buffer), np.float32) / 255.0
        return out.reshape(image.shape)

    return _pil_per_image(x, one)


_FUNCTIONS: dict[str, Callable[[np.ndarray, float, np.random.Generator], np.ndarray]] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "gaussian_blur": _gaussian_blur,
    "contrast": _contrast,
    "brightness": _brightness,
    "pixelate": _pixelate,
    "jpeg_compression": _jpeg_compression,
}


def _check(name: str, severity: int) -> None:
    if name not in _FUNCTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}.")
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)):
        raise ValueError(f"severity must be an int in 1..5; got {severity!r}.")
    if not 1 <= int(severity) <= 5:
        raise ValueError(f"severity must be in 1..5; got {severity}.")


def corrupt(
    images: np.ndarray,
    name: str,
    severity: int,
    *,
    seed: int | np.random.Generator = 0,
    value_range: tuple[float, float] | None = None,
) -> np.ndarray:
    """``images`` with corruption ``name`` at ``severity`` (CIFAR-10-C's parameters).

    Math: with ``u = (x - lo) / (hi - lo)`` the image in ``[0, 1]`` and ``c`` = ``PARAMETERS[name]
    [severity - 1]``, the result is ``lo + (hi - lo) clip(f_c(u), 0, 1)`` (``f_c`` in the module
    table), cast back to the input's dtype (rounded for integer dtypes).

    Args:
      images: ``(H, W)``, ``(H, W, C)`` or ``(N, H, W, C)``; float or integer.
      name: one of :data:`CORRUPTIONS`.
      severity: 1 (mildest) .. 5.
      seed: seed (or generator) of the random corruptions; the same seed gives the same output.
      value_range: ``(lo, hi)`` of valid values; default ``(0, 1)`` for float dtypes and
        ``(0, 255)`` for integer ones.

    Returns:
      The corrupted images, same shape and dtype, values in ``[lo, hi]``.

    Raises:
      ValueError: an unknown name (the message lists the known ones), a severity outside 1..5, an
        unsupported shape, an empty range, or JPEG on images with other than 1 or 3 channels.

    References:
      Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
      Perturbations", ICLR 2019 (arXiv:1903.12261).
    """
    _check(name, severity)
    x = np.asarray(images)
    if x.ndim not in (2, 3, 4):
        raise ValueError(f"images must be (H, W), (H, W, C) or (N, H, W, C); got shape {x.shape}.")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"images must have a float or integer dtype; got {x.dtype}.")
    if value_range is None:
        value_range = (0.0, 1.0) if np.issubdtype(x.dtype, np.floating) else (0.0, 255.0)
    lo, hi = map(float, value_range)
    if not hi > lo:
        raise ValueError(f"value_range must have lo < hi; got {value_range}.")
    batch = {2: x[None, ..., None], 3: x[None], 4: x}[x.ndim]
    unit = (batch.astype(np.float64) - lo) / (hi - lo)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    c = PARAMETERS[name][int(severity) - 1]
    out = np.clip(_FUNCTIONS[name](unit, c, rng), 0.0, 1.0) * (hi - lo) + lo
    if np.issubdtype(x.dtype, np.integer):
        out = np.round(out)
    out = np.clip(out, lo, hi).astype(x.dtype)
    return out.reshape(x.shape)


def corrupt_images(
    source: dict[str, np.ndarray],
    name: str,
    severity: int,
    *,
    key: str = "image",
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """A copy of a dataset source (a dict of arrays) with ``source[key]`` corrupted.

    The other arrays (targets) are shared, not copied. See :func:`corrupt` for the arguments.
    """
    if key not in source:
        raise ValueError(f"the source has no {key!r} array; keys: {sorted(source)}.")
    return {**source, key: corrupt(source[key], name, severity, seed=seed)}
