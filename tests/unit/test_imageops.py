"""The OpenCV operations the reading path uses, checked against their definitions
(scipy.ndimage's morphology and labelling, as the pipeline used them before)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from ocr_service import imageops


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.mark.parametrize("size", [1, 3, 7, 31])
def test_erode_dilate_and_opening_are_exact_min_max_filters_with_edges_repeated(rng, size):
    image = rng.random((45, 61)).astype(np.float32)
    low = ndimage.minimum_filter(image, size, mode="nearest")
    np.testing.assert_array_equal(imageops.erode(image, size), low)
    np.testing.assert_array_equal(imageops.dilate(image, size),
                                  ndimage.maximum_filter(image, size, mode="nearest"))
    np.testing.assert_array_equal(imageops.opening(image, size),
                                  ndimage.maximum_filter(low, size, mode="nearest"))


def test_label_numbers_marks_in_raster_order_with_their_boxes(rng):
    for _ in range(50):
        h, w = rng.integers(1, 80, 2)
        mask = rng.random((h, w)) < rng.uniform(0.05, 0.6)
        labels, n, boxes = imageops.label(mask)
        expected, count = ndimage.label(mask, structure=np.ones((3, 3)))
        assert n == count and labels.dtype == np.int32
        np.testing.assert_array_equal(labels, expected)
        assert boxes.shape == (n + 1, 4) and not boxes[0].any()
        for k, found in enumerate(ndimage.find_objects(expected), start=1):
            rows, cols = found
            assert boxes[k].tolist() == [cols.start, rows.start, cols.stop - cols.start,
                                         rows.stop - rows.start]


def test_label_takes_a_view_of_a_larger_mask():
    mask = np.zeros((10, 10), bool)
    mask[2:4, 2:4] = mask[6:8, 6:8] = True
    labels, n, boxes = imageops.label(mask[:, 1:9])  # not contiguous
    assert n == 2 and labels[7, 6] == 2 and boxes[2].tolist() == [5, 6, 2, 2]


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0, 0)])
def test_label_of_an_empty_mask_finds_nothing(shape):
    labels, n, boxes = imageops.label(np.zeros(shape, bool))
    assert labels.shape == shape and n == 0 and boxes.tolist() == [[0, 0, 0, 0]]


def test_resize_averages_blocks_when_shrinking_and_interpolates_when_growing():
    image = np.arange(16, dtype=np.float32).reshape(4, 4)
    np.testing.assert_allclose(imageops.resize(image, 2, 2), [[2.5, 4.5], [10.5, 12.5]])
    grown = imageops.resize(np.array([[0.0, 1.0]], np.float32), 4, 1)
    np.testing.assert_allclose(grown, [[0.0, 0.25, 0.75, 1.0]])


@pytest.mark.parametrize("size", [1, 2, 3, 6])
def test_smooth1d_is_a_centred_moving_average_with_mirrored_ends(rng, size):
    values = rng.random(40)
    np.testing.assert_allclose(imageops.smooth1d(values, size),
                               ndimage.uniform_filter1d(values, size), rtol=1e-12)


def test_decode_gives_stored_pixels_or_none_and_grey_weighs_colours_as_pillow(rng):
    rgb = rng.integers(0, 256, (12, 9, 3), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, "PNG")
    pixels = imageops.decode(buf.getvalue())
    np.testing.assert_array_equal(pixels[..., ::-1], rgb)  # OpenCV keeps BGR order
    pillow = np.asarray(Image.fromarray(rgb, "RGB").convert("L"), np.int16)
    assert np.abs(imageops.grey(pixels).astype(np.int16) - pillow).max() <= 1
    assert imageops.decode(b"not an image") is None


@pytest.mark.parametrize("size", [3, 7, 33])
def test_median_is_a_median_filter_with_edges_repeated_in_steps_of_1_255(rng, size):
    image = rng.random((40, 57)).astype(np.float32)
    levels = np.rint(image * 255.0) / 255.0
    expected = ndimage.median_filter(levels, size, mode="nearest")
    np.testing.assert_allclose(imageops.median(image, size), expected, atol=1e-6)


def test_distance_is_the_euclidean_distance_to_the_outside_within_a_tenth(rng):
    mask = np.zeros((60, 80), bool)
    mask[10:50, 20:70] = True
    mask[25:30, 40:45] = False
    mask |= rng.random(mask.shape) < 0.05
    found = imageops.distance(mask)
    exact = ndimage.distance_transform_edt(mask)
    assert found.dtype == np.float32 and (found[~mask] == 0).all()
    np.testing.assert_allclose(found[mask], exact[mask], rtol=0.1)


def test_distance_counts_what_lies_beyond_the_edges_as_outside_unless_told():
    mask = np.ones((3, 5), bool)
    np.testing.assert_allclose(imageops.distance(mask)[1], [1, 2, 2, 2, 1], rtol=0.1)
    assert (imageops.distance(mask, beyond=True) > 1e30).all()
