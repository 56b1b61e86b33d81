"""Training-time augmentation: seeded, shape-preserving, plausible distortions."""

from __future__ import annotations

import numpy as np
import pytest

from ocr_service.augment import augment_batch
from ocr_service.datasets import load_dataset


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """200 MNIST digits (200, 28, 28), ink = 1."""
    return load_dataset("mnist5k").images[:200]


def _centre_of_mass(images: np.ndarray) -> np.ndarray:
    _, h, w = images.shape
    mass = images.sum(axis=(1, 2))
    return (
        np.stack([images.sum(axis=2) @ np.arange(h), images.sum(axis=1) @ np.arange(w)], axis=1)
        / mass[:, None]
    )


def test_same_seed_same_result_and_input_untouched(digits):
    before = digits.copy()
    a = augment_batch(digits, np.random.default_rng(7))
    b = augment_batch(digits, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(digits, before)
    assert not np.array_equal(a, augment_batch(digits, np.random.default_rng(8)))


def test_output_is_a_valid_model_input(digits):
    out = augment_batch(digits, np.random.default_rng(0))
    assert out.shape == digits.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert (out[digits.sum(axis=(1, 2)) > 0].sum(axis=(1, 2)) > 0).all()  # no digit vanishes


def test_every_image_gets_its_own_distortion(digits):
    same = np.repeat(digits[:1], 50, axis=0)
    out = augment_batch(same, np.random.default_rng(0))
    pairwise = np.abs(out[:, None] - out[None, :]).mean(axis=(2, 3))
    assert pairwise[~np.eye(50, dtype=bool)].min() > 0.005


def test_distortions_are_moderate(digits):
    out = augment_batch(digits, np.random.default_rng(1))
    # Still the same digit in about the same place with about the same amount of ink.
    corr = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(out, digits, strict=True)]
    assert np.median(corr) > 0.5
    shift = np.abs(_centre_of_mass(out) - _centre_of_mass(digits))
    assert np.percentile(shift, 95) < 3.0
    ratio = out.sum(axis=(1, 2)) / digits.sum(axis=(1, 2))
    assert 0.6 < np.median(ratio) < 1.4


def test_strength_scales_the_distortion(digits):
    def change(strength: float) -> float:
        out = augment_batch(digits, np.random.default_rng(2), strength=strength)
        return float(np.abs(out - digits).mean())

    assert change(0.0) == 0.0
    assert change(0.3) < change(1.0)


def test_small_inputs_get_proportionate_distortions():
    images = load_dataset("digits").images[:100]
    out = augment_batch(images, np.random.default_rng(0))
    assert out.shape == images.shape
    corr = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(out, images, strict=True)]
    assert np.median(corr) > 0.5
