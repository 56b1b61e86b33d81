"""Non-character examples: touching pairs and fragments, normalised like uploads."""

from __future__ import annotations

import numpy as np
import pytest

from ocr_service.negatives import PAIR_FRACTION, among_classes, make_negatives


def _squares(n: int = 5) -> np.ndarray:
    """MNIST-like inputs: a 12x12 filled square in a 28x28 field."""
    images = np.zeros((n, 28, 28), np.float32)
    images[:, 8:20, 8:20] = 1.0
    return images


def _ink_box(image: np.ndarray, level: float = 0.5) -> tuple[int, int]:
    rows = np.flatnonzero(image.max(axis=1) > level)
    cols = np.flatnonzero(image.max(axis=0) > level)
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def test_examples_are_model_inputs_with_ink():
    out = make_negatives(_squares(), 50, "mnist", np.random.default_rng(0))
    assert out.shape == (50, 28, 28) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert (out.reshape(50, -1).max(axis=1) > 0.5).all()


def test_pairs_are_wide_and_fragments_narrow_in_the_stated_share():
    # Two touching squares are about twice as wide as tall; a slice of one is taller.
    out = make_negatives(_squares(), 400, "mnist", np.random.default_rng(1))
    boxes = np.array([_ink_box(image) for image in out])
    wide = boxes[:, 1] > 1.5 * boxes[:, 0]
    narrow = boxes[:, 0] > 1.5 * boxes[:, 1]
    assert (wide | narrow).all()
    assert abs(wide.mean() - PAIR_FRACTION) < 0.08


def test_the_same_seed_gives_the_same_examples():
    a = make_negatives(_squares(), 20, "mnist", np.random.default_rng(3))
    b = make_negatives(_squares(), 20, "mnist", np.random.default_rng(3))
    c = make_negatives(_squares(), 20, "mnist", np.random.default_rng(4))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_the_optdigits_scheme_gets_8x8_pairs_and_fragments_too():
    images = np.zeros((3, 8, 8), np.float32)
    images[:, 2:6, 2:6] = 1.0  # a 4-column character: wide enough for fragments at 8x8
    out = make_negatives(images, 300, "optdigits", np.random.default_rng(0))
    assert out.shape == (300, 8, 8)
    boxes = np.array([_ink_box(image, 0.2) for image in out])
    wide = boxes[:, 1] > boxes[:, 0]
    assert abs(wide.mean() - PAIR_FRACTION) < 0.1


def test_among_classes_sets_the_non_character_output_aside():
    probs = np.array([[0.2, 0.1, 0.1, 0.6], [0.0, 0.0, 0.0, 1.0]], np.float32)
    out = among_classes(probs, 3)
    assert np.allclose(out[0], [0.5, 0.25, 0.25])
    # It took everything: uniform over the classes, never NaN.
    assert np.allclose(out[1], 1 / 3) and np.isfinite(out).all()


def test_nothing_to_make_them_from_is_a_value_error():
    assert make_negatives(_squares(), 0, "mnist", np.random.default_rng(0)).shape == (0, 28, 28)
    with pytest.raises(ValueError, match="too little ink"):
        make_negatives(np.zeros((4, 28, 28), np.float32), 5, "mnist", np.random.default_rng(0))
    with pytest.raises(ValueError, match="no images"):
        make_negatives(np.zeros((0, 28, 28), np.float32), 5, "mnist", np.random.default_rng(0))
