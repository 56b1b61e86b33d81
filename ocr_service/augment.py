"""Training-time augmentation of model-input images (ink = 1), vectorised over the batch.

Per image: a random affine map (rotation, scale, shear, translation) composed with an
elastic distortion (Simard et al. 2003: a smoothed random displacement field), resampled
once with bilinear interpolation; then stroke thickness (blend towards a dilated or eroded
copy) and ink-intensity noise. Sizes scale with the image, so 8x8 inputs get proportionate
distortions.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["augment_batch"]

_CROSS = np.zeros((1, 3, 3), bool)
_CROSS[0, 1, :] = _CROSS[0, :, 1] = True


def _displacement(n: int, h: int, w: int, rng: np.random.Generator, strength: float):
    """Per-pixel source offsets ``(dy, dx)`` each (N, H, W) float32, in pixels."""
    unit = h / 28.0  # parameters below are tuned for 28x28 MNIST
    angle = rng.uniform(-1, 1, n) * np.deg2rad(12.0) * strength
    scale = 1.0 + rng.uniform(-1, 1, n) * 0.12 * strength
    aspect = 1.0 + rng.uniform(-1, 1, n) * 0.08 * strength
    shear = rng.uniform(-1, 1, n) * 0.25 * strength
    shift = (rng.uniform(-1, 1, (2, n)) * 1.5 * unit * strength).astype(np.float32)

    # Inverse map: output pixel (y, x) relative to the centre -> source offset.
    cos, sin = np.cos(angle), np.sin(angle)
    sy, sx = 1.0 / (scale * aspect), aspect / scale
    a = np.stack(
        [
            np.stack([sy * cos, sy * (sin + shear * cos)], axis=-1),
            np.stack([-sx * sin, sx * (cos - shear * sin)], axis=-1),
        ],
        axis=1,
    ).astype(np.float32)  # (N, 2, 2) rows: dy, dx
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = np.meshgrid(
        np.arange(h, dtype=np.float32) - cy, np.arange(w, dtype=np.float32) - cx, indexing="ij"
    )
    src_y = a[:, 0, 0, None, None] * yy + a[:, 0, 1, None, None] * xx + cy - shift[0, :, None, None]
    src_x = a[:, 1, 0, None, None] * yy + a[:, 1, 1, None, None] * xx + cx - shift[1, :, None, None]

    src_y += _elastic_field(n, h, w, rng, 20.0 * unit * strength)
    src_x += _elastic_field(n, h, w, rng, 20.0 * unit * strength)
    return src_y, src_x


def _elastic_field(n: int, h: int, w: int, rng: np.random.Generator, alpha: float) -> np.ndarray:
    """Simard's displacement: uniform noise blurred by a Gaussian (sigma 4 px at 28x28), (N, H, W).

    The kernel is truncated at 2 sigma, which halves the cost and changes the field little.
    """
    field = rng.uniform(-1.0, 1.0, (n, h, w)).astype(np.float32)
    sigma = 4.0 * h / 28.0
    ndimage.gaussian_filter(
        field, sigma=(0, sigma, sigma), output=field, mode="constant", truncate=2.0
    )
    field *= np.float32(alpha)
    return field


def _bilinear(images: np.ndarray, src_y: np.ndarray, src_x: np.ndarray) -> np.ndarray:
    """Sample each image at its own coordinates; outside the image is paper (0).

    The batch is stacked into one tall 2-D image with a zero border around every item, so a
    single 2-D ``map_coordinates`` call does it (a 3-D call would interpolate 8 corners).
    """
    n, h, w = images.shape
    padded = np.zeros((n, h + 2, w + 2), np.float32)
    padded[:, 1:-1, 1:-1] = images
    rows = np.clip(src_y, -1.0, h, out=src_y) + 1.0
    rows += (np.arange(n, dtype=np.float32) * (h + 2))[:, None, None]
    cols = np.clip(src_x, -1.0, w, out=src_x) + 1.0
    out = ndimage.map_coordinates(
        padded.reshape(n * (h + 2), w + 2), [rows, cols], order=1, prefilter=False
    )
    return out.astype(np.float32, copy=False)


def augment_batch(
    images: np.ndarray, rng: np.random.Generator, strength: float = 1.0
) -> np.ndarray:
    """Randomly distorted copies of ``images`` (N, H, W) float32 in [0, 1]; same shape.

    ``strength`` scales every distortion (0 = identity). Deterministic given ``rng``.
    """
    images = np.asarray(images, dtype=np.float32)
    n, h, w = images.shape
    if n == 0 or strength <= 0:
        return images.copy()
    src_y, src_x = _displacement(n, h, w, rng, strength)
    out = _bilinear(images, src_y, src_x)

    # Stroke thickness: t > 0 blends towards the dilated image, t < 0 towards the eroded one.
    t = (rng.uniform(-1, 1, n) * 0.6 * strength).astype(np.float32)[:, None, None]
    thicker = ndimage.grey_dilation(out, footprint=_CROSS)
    thinner = ndimage.grey_erosion(out, footprint=_CROSS)
    out += np.abs(t) * (np.where(t > 0, thicker, thinner) - out)

    # Pen-pressure noise on the ink only: paper stays exactly 0 as after preprocessing.
    gain = rng.uniform(1.0 - 0.15 * strength, 1.0, (n, 1, 1)).astype(np.float32)
    noise = rng.standard_normal(out.shape, dtype=np.float32)
    noise *= np.float32(0.03 * strength)
    out *= gain + noise * (out > 0)
    np.clip(out, 0.0, 1.0, out=out)
    return out
