"""Network inputs: the image's pixels, or its stroke-direction planes and concavity planes."""

import numpy as np
import pytest

from ocr_service.features import FEATURES, input_size, model_inputs


def _image(draw):
    img = np.zeros((1, 28, 28), np.float32)
    draw(img[0])
    return img


def _planes(img):
    return model_inputs(img, "gradients").reshape(len(img), 4, 14, 14)


VERTICAL = _image(lambda a: a.__setitem__((slice(4, 24), slice(12, 15)), 1.0))
HORIZONTAL = _image(lambda a: a.__setitem__((slice(12, 15), slice(4, 24)), 1.0))
DIAGONAL = _image(lambda a: [a.__setitem__((i, slice(i - 1, i + 2)), 1.0) for i in range(4, 24)])


def test_pixels_are_the_flattened_image_itself():
    images = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
    inputs = model_inputs(images, "pixels")
    assert inputs.shape == (3, 64) and inputs.dtype == np.float32
    assert np.array_equal(inputs, images.reshape(3, 64))


@pytest.mark.parametrize("shape, size", [((28, 28), 784), ((8, 8), 64)])
def test_gradient_inputs_are_as_many_as_the_pixels_for_both_schemes(shape, size):
    images = np.random.default_rng(0).random((5, *shape)).astype(np.float32)
    inputs = model_inputs(images, "gradients")
    assert inputs.shape == (5, size) == (5, input_size(*shape, "gradients"))
    assert inputs.dtype == np.float32 and inputs.flags.c_contiguous
    assert np.isfinite(inputs).all() and (inputs >= 0).all()


@pytest.mark.parametrize("image, plane", [(VERTICAL, 0), (HORIZONTAL, 2)])
def test_a_straight_stroke_lights_mostly_the_plane_of_its_long_edges(image, plane):
    energy = _planes(image).sum(axis=(0, 2, 3))  # the stroke's ends and corners add a little
    assert energy[plane] > 5 * np.delete(energy, plane).max()


def test_a_diagonal_stroke_lights_a_diagonal_plane_more_than_the_straight_ones():
    energy = _planes(DIAGONAL).sum(axis=(0, 2, 3))
    assert max(energy[1], energy[3]) > 2 * max(energy[0], energy[2])


def test_both_edges_of_a_stroke_count_alike_so_ink_polarity_of_an_edge_does_not_matter():
    planes = _planes(VERTICAL)[0, 0]
    left, right = planes[:, 5:7].sum(), planes[:, 7:9].sum()  # columns 10-13 and 14-17
    assert left == pytest.approx(right, rel=1e-6)


def test_the_planes_share_out_the_gradient_magnitude():
    images = np.random.default_rng(1).random((2, 28, 28)).astype(np.float32)
    gy, gx = np.gradient(np.pad(images, ((0, 0), (1, 1), (1, 1))), axis=(1, 2))
    magnitude = np.hypot(gx, gy)[:, 1:-1, 1:-1]
    pooled = magnitude.reshape(2, 14, 2, 14, 2).mean(axis=(2, 4)) * 2
    assert np.allclose(_planes(images).sum(axis=1), pooled, atol=1e-5)


def test_a_blank_image_has_no_gradient_features():
    assert not model_inputs(np.zeros((2, 28, 28), np.float32), "gradients").any()


@pytest.mark.parametrize("features", FEATURES)
def test_no_images_give_no_inputs_and_one_image_must_still_be_a_batch(features):
    empty = model_inputs(np.zeros((0, 28, 28), np.float32), features)
    assert empty.shape == (0, input_size(28, 28, features))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        model_inputs(np.zeros((28, 28), np.float32), features)


def test_sizes_the_pooling_cannot_divide_and_unknown_features_are_refused():
    with pytest.raises(ValueError, match="divisible by 2"):
        model_inputs(np.zeros((1, 7, 8), np.float32), "gradients")
    with pytest.raises(ValueError, match="divisible by 4"):
        input_size(14, 14, "gradients+concavity")
    with pytest.raises(ValueError, match="unknown input features"):
        model_inputs(np.zeros((1, 8, 8), np.float32), "hog")
    assert FEATURES == ("pixels", "gradients", "gradients+concavity")


def _concavity(img):
    inputs = model_inputs(img, "gradients+concavity")
    assert np.array_equal(inputs[:, :784], model_inputs(img, "gradients"))
    return inputs[:, 784:].reshape(len(img), 5, 7, 7)


def _ring(a, top=True):
    a[6:22, 6:9] = a[6:22, 19:22] = a[19:22, 6:22] = 1.0  # left, right, bottom
    if top:
        a[6:9, 6:22] = 1.0


RING = _image(_ring)
CUP = _image(lambda a: _ring(a, top=False))


@pytest.mark.parametrize("shape, size", [((28, 28), 784 + 245), ((8, 8), 64 + 20)])
def test_concavity_adds_five_planes_pooled_over_4x4_blocks(shape, size):
    images = np.random.default_rng(0).random((3, *shape)).astype(np.float32)
    inputs = model_inputs(images, "gradients+concavity")
    assert inputs.shape == (3, size) == (3, input_size(*shape, "gradients+concavity"))
    assert inputs.dtype == np.float32 and inputs.flags.c_contiguous


def test_a_closed_loop_encloses_paper_and_an_open_cup_opens_upwards():
    ring, cup = _concavity(np.concatenate([RING, CUP]))
    inside = 10 * 10  # the paper pixels inside the ring
    assert ring[0].sum() * 16 == inside and not ring[1:].any()
    # the cup's inside, up to its rim (above it, no ink lies left or right), opens upwards
    assert cup[1].sum() * 16 == 13 * 10 and not cup[[0, 2, 3, 4]].any()


def test_each_open_side_has_its_own_plane():
    for turns, plane in [(2, 2), (1, 3), (3, 4)]:  # the cup turned: open down, left, right
        turned = np.ascontiguousarray(np.rot90(CUP, turns, axes=(1, 2)))
        planes = _concavity(turned)[0]
        assert planes[plane].sum() > 0 and not np.delete(planes, plane, axis=0).any()


def test_faint_pixels_are_paper_for_the_concavity_planes():
    assert not _concavity(RING * 0.3).any() and _concavity(RING * 0.5)[0, 0].any()
