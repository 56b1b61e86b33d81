"""What the network reads of a normalised character image: its pixels, or its stroke
directions and the paper they enclose.

``pixels``: the image itself, flattened. ``gradients``: four planes of stroke-edge
orientation (0, 45, 90 and 135 degrees; the image gradient's magnitude shared between the
two nearest orientations), each pooled over 2x2 blocks: for a 28x28 image, 4 x 14 x 14 =
784 inputs, as many as its pixels. Direction planes are the classic input of handwritten
digit classifiers (Liu et al., 2003): a slightly shifted or thickened stroke moves few of
their values, where it changes many pixels, and a network reading them makes fewer errors
(figures: docs/training.md).
``gradients+concavity``: the same planes plus five concavity planes (Favata and Srikantan,
1996): for each paper pixel, whether ink lies on all four sides of it (a closed loop, as in
a 9's head) or on exactly three (a cup open upwards, downwards, to the left or to the right,
as in a 4's open top), each averaged over 4x4 blocks: 784 + 5 x 7 x 7 = 1,029 inputs for a
28x28 image. They tell apart shapes whose strokes run alike, by what they enclose.

Training, evaluation and serving all call ``model_inputs``, so a model reads exactly the
features it was trained on; the artifact records which (``input.features``).
"""

from __future__ import annotations

import functools
import math

import numpy as np

__all__ = ["FEATURES", "input_size", "model_inputs"]

FEATURES = ("pixels", "gradients", "gradients+concavity")
ORIENTATIONS = 4
POOL = 2  # the 2x2 blocks below are written out for speed
CONCAVITY_PLANES = 5
CONCAVITY_POOL = 4
#: a pixel darker than this (ink = 1) is ink for the concavity planes: about half of a
#: normalised stroke's edge pixels
CONCAVITY_INK = 0.4
#: images per pass: the temporaries of a chunk stay in cache, which is faster per image than
#: one pass over a whole training set
CHUNK = 128


def input_size(height: int, width: int, features: str) -> int:
    """Network inputs for images of ``height x width`` pixels. Raises ``ValueError``."""
    _check(features)
    if features == "pixels":
        return height * width
    pool = CONCAVITY_POOL if features == "gradients+concavity" else POOL
    if height % pool or width % pool:
        raise ValueError(f"{features} features need image sides divisible by {pool}, "
                         f"got {height}x{width}")
    size = ORIENTATIONS * (height // POOL) * (width // POOL)
    if features == "gradients+concavity":
        size += CONCAVITY_PLANES * (height // CONCAVITY_POOL) * (width // CONCAVITY_POOL)
    return size


def model_inputs(images: np.ndarray, features: str) -> np.ndarray:
    """Network inputs ``(N, D)`` float32, C-contiguous, of images ``(N, H, W)`` (ink = 1)."""
    _check(features)
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3:
        raise ValueError(f"expected images (N, H, W), got an array of shape {images.shape}")
    n, h, w = images.shape
    if features == "pixels":
        return np.ascontiguousarray(images.reshape(n, h * w))
    out = np.empty((n, input_size(h, w, features)), np.float32)
    for start in range(0, n, CHUNK):
        chunk = images[start : start + CHUNK]
        rows = out[start : start + CHUNK]
        gradients = _gradient_planes(chunk).reshape(len(chunk), -1)
        rows[:, : gradients.shape[1]] = gradients
        if features == "gradients+concavity":
            rows[:, gradients.shape[1] :] = _concavity_planes(chunk).reshape(len(chunk), -1)
    return out


def _check(features: str) -> None:
    if features not in FEATURES:
        raise ValueError(f"unknown input features {features!r} (expected one of {FEATURES})")


_BINS = np.arange(ORIENTATIONS, dtype=np.float32).reshape(1, ORIENTATIONS, 1, 1)


def _gradient_planes(images: np.ndarray) -> np.ndarray:
    """``(N, ORIENTATIONS, H/POOL, W/POOL)`` float32 orientation planes of ``(N, H, W)``.

    Few whole-array numpy calls rather than a loop over bins: a served character is one
    small image, where each call's fixed cost is what counts.
    """
    gx = np.zeros_like(images)  # twice the central differences, zero padding outside
    gx[:, :, 1:-1] = images[:, :, 2:] - images[:, :, :-2]
    gx[:, :, 0], gx[:, :, -1] = images[:, :, 1], -images[:, :, -2]
    gy = np.zeros_like(images)
    gy[:, 1:-1] = images[:, 2:] - images[:, :-2]
    gy[:, 0], gy[:, -1] = images[:, 1], -images[:, -2]
    # an edge and its reverse are one stroke orientation: fold onto gy >= 0, angle in [0, pi]
    np.negative(gx, out=gx, where=gy < 0)
    np.abs(gy, out=gy)
    magnitude = np.hypot(gx, gy)
    position = np.arctan2(gy, gx)
    position *= np.float32(ORIENTATIONS / math.pi)  # in [0, ORIENTATIONS]: bin units
    # each bin takes 1 - (its cyclic distance to the orientation) of the magnitude: the two
    # nearest bins share it (0 and 180 degrees are one orientation)
    share = np.abs(position[:, None] - _BINS)
    np.minimum(share, ORIENTATIONS - share, out=share)
    np.subtract(1, share, out=share)
    np.maximum(share, 0, out=share)
    share *= magnitude[:, None]
    planes = share[..., 0::2, 0::2] + share[..., 1::2, 0::2]
    planes += share[..., 0::2, 1::2]
    planes += share[..., 1::2, 1::2]
    # /2 for the doubled differences, /4 for the mean over a 2x2 block, x2 so a stroke edge's
    # planes are about as large as its pixels (ink = 1)
    planes *= np.float32(0.25)
    return planes


def _concavity_planes(images: np.ndarray) -> np.ndarray:
    """``(N, CONCAVITY_PLANES, H/CONCAVITY_POOL, W/CONCAVITY_POOL)`` float32 of ``(N, H, W)``.

    The share of each block's pixels that are paper with ink on all four sides, then on
    exactly three: open upwards, downwards, to the left, to the right. "Ink above" is any ink
    in the column above, wherever it is: a running maximum down the column.
    """
    ink = images > CONCAVITY_INK
    n, h, w = images.shape
    sides = np.empty((n, 4, h, w), bool)  # ink above, below, left, right (or here)
    np.maximum.accumulate(ink, axis=1, out=sides[:, 0])
    np.maximum.accumulate(ink[:, ::-1], axis=1, out=sides[:, 1, ::-1])
    np.maximum.accumulate(ink, axis=2, out=sides[:, 2])
    np.maximum.accumulate(ink[:, :, ::-1], axis=2, out=sides[:, 3, :, ::-1])
    hits = sides.sum(axis=1, dtype=np.uint8)
    hits[ink] = 0  # only paper counts
    planes = np.empty((n, CONCAVITY_PLANES, h, w), np.float32)
    np.equal(hits, 4, out=planes[:, 0])
    np.logical_and(~sides, (hits == 3)[:, None], out=planes[:, 1:])  # the one side missing
    # block means as two small matrix products: faster than a reshaped mean, and exact
    return np.matmul(np.matmul(_block_mean(h).T, planes), _block_mean(w))


@functools.cache
def _block_mean(size: int) -> np.ndarray:
    """``(size, size / CONCAVITY_POOL)`` float32: right-multiplied, the mean of each block."""
    blocks = np.eye(size // CONCAVITY_POOL, dtype=np.float32)
    mean = np.kron(blocks, np.full((CONCAVITY_POOL, 1), 1 / CONCAVITY_POOL, np.float32))
    mean.flags.writeable = False  # cached: shared by every call
    return mean
