"""Several characters in one ink map: merging, splitting, reading order, boxes."""

from __future__ import annotations

import numpy as np
import pytest

from ocr_service.datasets import load_dataset, split_dataset
from ocr_service.ink import ink_from_gray, ink_marks
from ocr_service.preprocess import decode_image
from ocr_service.segment import segment_ink
from ocr_testing.renderings import inside_and_covering, render_string


def _page(*rects: tuple[int, int, int, int], shape=(120, 400)) -> np.ndarray:
    """Ink map with filled rectangles ``(x, y, w, h)``."""
    ink = np.zeros(shape, np.float32)
    for x, y, w, h in rects:
        ink[y : y + h, x : x + w] = 1.0
    return ink


def test_separate_characters_come_left_to_right_with_their_boxes():
    rects = [(300, 30, 20, 60), (20, 25, 30, 60), (150, 35, 25, 60)]
    segments = segment_ink(_page(*rects), "multi")
    assert [s.box for s in segments] == sorted(rects)
    assert all(s.line == 0 for s in segments)
    assert all(s.ink.shape == (s.box[3], s.box[2]) for s in segments)


def test_parts_of_one_character_are_merged():
    broken_five = [(50, 20, 30, 8), (50, 32, 30, 50)]  # top bar, 4 px gap, body
    dotted_i = [(200, 20, 8, 8), (200, 40, 8, 45)]
    segments = segment_ink(_page(*broken_five, *dotted_i), "multi")
    assert [s.box for s in segments] == [(50, 20, 30, 62), (200, 20, 8, 65)]


def test_a_loose_piece_inside_a_loop_belongs_to_it():
    ink = _page(
        (20, 20, 60, 6),
        (20, 74, 60, 6),
        (20, 20, 6, 60),
        (74, 20, 6, 60),  # a ring
        (40, 40, 10, 10),
    )
    (segment,) = segment_ink(ink, "multi")
    assert segment.box == (20, 20, 60, 60)
    assert segment.ink.sum() == ink.sum()


def test_a_broken_stroke_side_by_side_is_one_character():
    # Left part and right part of one character, a 1 px gap, together narrower than tall.
    (segment,) = segment_ink(_page((20, 20, 20, 60), (41, 20, 15, 60)), "auto")
    assert segment.box == (20, 20, 36, 60)


def test_a_small_stroke_end_a_little_apart_joins_its_character():
    body, tail = (20, 20, 40, 60), (70, 60, 12, 15)  # 10 px away, a quarter of the height
    (segment,) = segment_ink(_page(body, tail), "auto")
    assert segment.box == (20, 20, 62, 60)
    far = segment_ink(_page(body, (100, 60, 12, 15)), "auto")  # 40 px away: its own
    assert len(far) == 2


def test_ink_of_a_neighbour_reaching_into_the_box_is_left_out():
    # A long tail of the first character passes under the second one's box.
    ink = _page((20, 20, 20, 60), (20, 75, 110, 5), (100, 10, 20, 55))
    first, second = segment_ink(ink, "multi")
    assert second.box == (100, 10, 20, 55)
    assert second.ink.sum() == 20 * 55
    assert first.box == (20, 20, 110, 60)


def test_lines_are_read_top_to_bottom():
    ink = _page(
        (200, 10, 20, 40), (20, 12, 20, 40), (30, 80, 20, 40), (150, 78, 20, 40), shape=(140, 300)
    )
    segments = segment_ink(ink, "auto")
    assert [(s.line, s.box[0]) for s in segments] == [(0, 20), (0, 200), (1, 30), (1, 150)]


def test_a_row_whose_baseline_wobbles_by_a_character_height_is_one_line():
    # Each character sits up to a whole character height above or below its neighbours.
    ink = _page((20, 10, 20, 40), (60, 45, 20, 40), (100, 5, 20, 40), (140, 48, 20, 40),
                (180, 20, 20, 40), shape=(120, 240))
    segments = segment_ink(ink, "auto")
    assert [(s.line, s.box[0]) for s in segments] == [(0, x) for x in (20, 60, 100, 140, 180)]


def test_rows_apart_are_read_row_by_row_even_when_each_wobbles():
    ink = _page((20, 10, 20, 40), (60, 30, 20, 40), (100, 5, 20, 40),  # row 1: y 5-70
                (30, 90, 20, 40), (70, 110, 20, 40), (110, 85, 20, 40),  # row 2: y 85-150
                (25, 185, 20, 40), (75, 175, 20, 40),  # row 3: y 175-225
                shape=(240, 160))
    segments = segment_ink(ink, "auto")
    assert [(s.line, s.box[0]) for s in segments] == [
        (0, 20), (0, 60), (0, 100), (1, 30), (1, 70), (1, 110), (2, 25), (2, 75)]


def test_rows_touching_through_a_long_stroke_are_still_divided():
    # A descender of the first row reaches down into the second: no band of paper
    # separates them, but the band is taller than two rows, so overlap decides.
    ink = _page((20, 10, 20, 40), (60, 10, 20, 40), (100, 10, 20, 70),
                (20, 75, 20, 40), (60, 75, 20, 40), shape=(130, 160))
    segments = segment_ink(ink, "auto")
    assert sorted((s.line, s.box[0]) for s in segments) == [
        (0, 20), (0, 60), (0, 100), (1, 20), (1, 60)]


def test_a_wide_component_offers_a_split_at_the_thinnest_column():
    # Two blobs joined by a thin bridge at x = 60..70.
    ink = _page((10, 20, 50, 60), (60, 48, 10, 4), (70, 20, 50, 60))
    (segment,) = segment_ink(ink, "auto")
    assert segment.box == (10, 20, 110, 60)
    left, right = segment.splits[0]  # the deepest projection minimum comes first
    assert 55 <= left.box[0] + left.box[2] <= 75
    assert left.box[0] == 10 and right.box[0] + right.box[2] == 120
    assert all(len(split) == 2 for split in segment.splits)


def test_a_split_leaves_the_neighbours_stroke_tips_out():
    # The right character's foot reaches under the left one; a bridge joins the two.
    ink = _page((10, 20, 40, 40), (60, 20, 40, 60), (50, 40, 10, 4), (30, 72, 30, 4))
    (segment,) = segment_ink(ink, "multi")
    left = segment.splits[0][0]
    assert left.box[1] == 20 and left.box[3] <= 41  # no foot below row 60


def test_a_very_wide_component_also_offers_a_split_into_several():
    ink = _page(
        (10, 20, 40, 60), (50, 48, 10, 4), (60, 20, 40, 60), (100, 48, 10, 4), (110, 20, 40, 60)
    )
    (segment,) = segment_ink(ink, "multi")
    first, second, third = segment.splits[-1]  # each cut falls inside a bridge
    assert first.box[0] == 10
    assert 50 <= second.box[0] <= 60 and 100 <= third.box[0] <= 110


def test_a_narrow_character_offers_no_split():
    (segment,) = segment_ink(_page((10, 10, 40, 80)), "multi")
    assert segment.splits == ()


def test_a_flat_character_is_measured_against_its_line():
    # Two 60 px tall characters and a low, wide one (a flat 2): 40 px wide, 20 px tall.
    ink = _page((20, 30, 30, 60), (100, 30, 30, 60), (180, 60, 40, 20))
    tall, _, flat = segment_ink(ink, "auto")
    assert flat.ref_height == 60 and tall.ref_height == 60
    assert not flat.wide  # 40 px is less than 0.7 of the line's 60 px height
    assert [s.line_size for s in (tall, flat)] == [2, 2]  # full-size ones: the tall two
    (alone,) = segment_ink(_page((180, 60, 40, 20)), "auto")
    assert alone.ref_height == 20 and alone.wide and alone.line_size == 1


def test_a_long_dash_between_characters_is_one_mark_not_a_row_of_them():
    ink = _page((20, 30, 10, 60), (60, 58, 280, 3), (360, 30, 10, 60), shape=(120, 420))
    one, dash, other = segment_ink(ink, "auto")
    assert dash.box == (60, 58, 280, 3) and not dash.wide and dash.splits == ()
    assert [s.line_size for s in (one, dash, other)] == [2, 2, 2]  # the dash is not counted


def test_an_empty_ink_map_has_no_characters():
    assert segment_ink(np.zeros((30, 40), np.float32), "auto") == []


def test_single_mode_treats_all_ink_as_one_character():
    (segment,) = segment_ink(_page((20, 20, 20, 60), (200, 30, 30, 50)), "single")
    assert segment.box == (20, 20, 210, 60)
    assert segment.splits == ()


def test_unknown_mode_is_a_value_error():
    with pytest.raises(ValueError, match="segment mode"):
        segment_ink(_page((5, 5, 5, 5)), "columns")


def test_rendered_digit_strings_segment_into_their_digits():
    images, _ = split_dataset(load_dataset("mnist5k"), seed=0, test_fraction=0.2).test
    rng = np.random.default_rng(3)
    for _ in range(10):
        idx = rng.choice(len(images), size=5, replace=False)
        rendered = render_string(images[idx], rng, touching=0.0)
        segments = segment_ink(ink_from_gray(decode_image(rendered.data)), "auto")
        assert len(segments) == 5
        for seg, drawn in zip(segments, rendered.boxes, strict=True):
            assert inside_and_covering(seg.box, drawn)


def test_an_upload_of_thousands_of_dots_is_refused_quickly():
    from ocr_service.image_errors import TooManyCharactersError
    from ocr_service.segment import MAX_COMPONENTS

    ink = np.zeros((600, 600), np.float32)
    ink[5::12, 5::12] = 1.0  # 2,500 separate dots
    assert (ink > 0).sum() > MAX_COMPONENTS
    with pytest.raises(TooManyCharactersError, match="separate ink marks"):
        segment_ink(ink)


def test_too_many_characters_after_merging_are_refused():
    from ocr_service.image_errors import TooManyCharactersError
    from ocr_service.segment import MAX_CHARACTERS

    ink = np.zeros((20, 12 * (MAX_CHARACTERS + 5)), np.float32)
    for k in range(MAX_CHARACTERS + 5):
        ink[4:16, 12 * k + 3 : 12 * k + 6] = 1.0  # a row of short bars, one character each
    with pytest.raises(TooManyCharactersError, match="characters"):
        segment_ink(ink)
    assert len(segment_ink(ink[:, : 12 * 10])) == 10


@pytest.mark.parametrize("mode", ["auto", "multi", "single"])
def test_the_marks_found_with_the_ink_give_the_same_segments(mode):
    images, _ = split_dataset(load_dataset("mnist5k"), seed=0).test
    rng = np.random.default_rng(21)
    for start in range(0, 40, 5):
        gray = decode_image(render_string(images[start : start + 5], rng, touching=0.4).data)
        gray[rng.integers(0, gray.shape[0], 30), rng.integers(0, gray.shape[1], 30)] = 0.0
        marks = ink_marks(gray)  # with specks, which it drops
        expected = segment_ink(ink_from_gray(gray), mode)
        got = segment_ink(marks, mode)
        assert [(s.box, s.line, s.ref_height, s.wide, s.line_size) for s in got] == [
            (s.box, s.line, s.ref_height, s.wide, s.line_size) for s in expected]
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_array_equal(a.ink, b.ink)
