"""Styled training digits: writing styles MNIST lacks, drawn reproducibly from strokes and
from Debian's handwriting fonts, normalised like uploads."""

from __future__ import annotations

import numpy as np
import pytest

from ocr_service.styles import (
    HANDWRITING_FONTS,
    STROKE_STYLES,
    MissingFontsError,
    font_files,
    make_styled,
)

DIGITS = [str(d) for d in range(10)]


def test_styled_digits_are_model_inputs_with_labels_of_the_classes():
    images, labels = make_styled(60, DIGITS, "mnist", np.random.default_rng(0))
    assert images.shape == (60, 28, 28) and images.dtype == np.float32
    assert labels.dtype == np.int64 and set(labels) <= set(range(10))
    assert images.min() >= 0.0 and images.max() <= 1.0
    # every example is a character fitted like an upload: its ink in a 20x20 box
    assert (images.reshape(60, -1).max(axis=1) > 0.5).all()
    for image in images:
        rows, cols = np.nonzero(image)
        assert max(np.ptp(rows), np.ptp(cols)) <= 20


def test_the_same_seed_draws_the_same_digits_and_another_seed_others():
    a = make_styled(30, DIGITS, "mnist", np.random.default_rng(5))
    b = make_styled(30, DIGITS, "mnist", np.random.default_rng(5))
    c = make_styled(30, DIGITS, "mnist", np.random.default_rng(6))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_the_missing_styles_and_every_class_are_drawn():
    _, labels = make_styled(400, DIGITS, "mnist", np.random.default_rng(1))
    counts = np.bincount(labels, minlength=10)
    assert (counts > 0).all()  # fonts give every class
    for digit in STROKE_STYLES:  # and the stroke styles come on top of them
        assert counts[int(digit)] > counts.mean()


def test_a_flagged_one_is_not_a_bare_bar():
    from ocr_service.styles import _draw, _flag_one

    ink = _draw(_flag_one(np.random.default_rng(0)), np.random.default_rng(0))
    rows = np.flatnonzero(ink.max(axis=1) > 0.5)
    top = ink[rows[0] : rows[0] + (rows[-1] - rows[0]) // 4]
    cols = np.flatnonzero(top.max(axis=0) > 0.5)
    # the flag reaches well left of the stem at the top
    stem = np.flatnonzero(ink[(rows[0] + rows[-1]) // 2] > 0.5)
    assert cols.min() < stem.min() - 5


def test_classes_without_digits_are_refused_and_others_ignored():
    with pytest.raises(ValueError, match="digits"):
        make_styled(5, ["a", "b"], "mnist", np.random.default_rng(0))
    _, labels = make_styled(50, ["x", "1", "7"], "mnist", np.random.default_rng(0))
    assert set(labels) <= {1, 2}  # indices of "1" and "7"
    images, labels = make_styled(0, ["a"], "mnist", np.random.default_rng(0))
    assert images.shape == (0, 28, 28) and labels.shape == (0,)


def test_styled_digits_fit_the_optdigits_scheme_too():
    images, _ = make_styled(8, DIGITS, "optdigits", np.random.default_rng(0))
    assert images.shape == (8, 8, 8)


def test_missing_fonts_name_the_debian_packages(tmp_path):
    with pytest.raises(MissingFontsError, match="fonts-bwht") as caught:
        font_files(tmp_path)
    assert "apt-get install" in str(caught.value)
    files = font_files()
    assert len(files) == sum(len(names) for names in HANDWRITING_FONTS.values())
    assert all(path.is_file() for path in files)
