"""Ink maps and marks: ink against paper in either polarity, strokes labelled, specks and
page frames dropped, and a stack of images read exactly as each image alone."""

from __future__ import annotations

import numpy as np
import pytest

from ocr_service import ink
from ocr_service.datasets import load_dataset, split_dataset
from ocr_service.image_errors import NoInkError
from ocr_service.ink import ink_from_gray, ink_marks, ink_marks_many


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    """One held-out mnist5k test digit of each class: (10, 28, 28), ink = 1."""
    images, labels = split_dataset(load_dataset("mnist5k"), seed=0, test_fraction=0.2).test
    return images[[int(np.flatnonzero(labels == c)[0]) for c in range(10)]]


def test_ink_map_is_zero_on_paper_and_one_in_strokes():
    gray = np.full((100, 100), 0.9, np.float32)
    gray[20:80, 45:55] = 0.2
    ink = ink_from_gray(gray)
    assert ink[50, 50] == pytest.approx(1.0)
    assert ink[5, 5] == 0.0 and ink[50, 20] == 0.0


def test_ink_marks_label_each_stroke_of_the_ink_and_leave_specks_out():
    gray = np.full((120, 200), 0.9, np.float32)
    gray[20:100, 30:40] = 0.1  # a 1
    gray[20:30, 80:140] = 0.1  # a 7's bar ...
    gray[30:100, 130:140] = 0.1  # ... and its stem, touching it
    gray[60:62, 170:172] = 0.1  # a speck: not ink
    marks = ink_marks(gray)
    np.testing.assert_array_equal(marks.ink, ink_from_gray(gray))
    assert marks.count == 2
    assert set(np.unique(marks.labels)) == {0, marks.labels[50, 35], marks.labels[25, 100]}
    assert marks.labels[50, 35] != marks.labels[25, 100] == marks.labels[90, 135]
    np.testing.assert_array_equal(marks.labels > 0, marks.ink > 0)  # the speck is paper
    one, seven = marks.labels[50, 35], marks.labels[25, 100]
    assert marks.boxes[one].tolist() == [30, 20, 10, 80]  # x, y, w, h
    assert marks.boxes[seven].tolist() == [80, 20, 60, 80]
    assert np.count_nonzero(marks.boxes[:, 2]) == 2  # paper and the speck have none


def _pages_with_a_frame(rng: np.random.Generator) -> list[np.ndarray]:
    """Four 120x160 pages (large enough for a local paper level): a stroke inside the dark
    band of a table on three sides, the same page in the other polarity, a blank one, the
    band alone (all the ink there is, so no frame)."""
    page = np.full((120, 160), 0.9, np.float32) + rng.normal(0, 0.01, (120, 160)).astype(
        np.float32)
    page[:8], page[:, :8], page[-8:] = 0.1, 0.1, 0.1
    band = page.copy()
    page[40:90, 70:76] = 0.15
    return [page, 1.0 - page, np.full((120, 160), 0.6, np.float32), band]


def _assert_same_as_alone(grays: list[np.ndarray]) -> tuple[list, set[str]]:
    """``ink_marks_many(grays)``, checked against ``ink_marks`` of each image alone; returns
    it and the messages of the errors it gave."""
    found = ink_marks_many(grays)
    messages = set()
    for gray, got in zip(grays, found, strict=True):
        try:
            expected = ink_marks(gray)
        except NoInkError as exc:
            assert type(got) is NoInkError and str(got) == str(exc)
            messages.add(str(exc))
            continue
        assert isinstance(got, ink.InkMarks) and got.count == expected.count
        assert got.ink.dtype == expected.ink.dtype and got.labels.dtype == expected.labels.dtype
        np.testing.assert_array_equal(got.ink, expected.ink)
        np.testing.assert_array_equal(got.labels, expected.labels)
        np.testing.assert_array_equal(got.boxes, expected.boxes)
    return found, messages


def test_ink_marks_many_gives_each_image_what_ink_marks_gives_it(digits):
    rng = np.random.default_rng(3)
    specks = np.full((28, 28), 0.9, np.float32)
    specks[4, 4] = specks[20, 9] = 0.1
    grays = [*digits, *(1.0 - digits)]  # 28x28, both polarities
    grays += [np.full((28, 28), 0.5, np.float32), specks,  # blank; only specks
              rng.random((28, 28)).astype(np.float32),  # noise
              (0.5 + 0.03 * (rng.random((28, 28)) > 0.9)).astype(np.float32)]  # faint
    grays += _pages_with_a_frame(rng)
    grays.append(1.0 - np.pad(digits[3], ((5, 9), (2, 30))))  # a shape of its own
    order = rng.permutation(len(grays))
    grays = [grays[i] for i in order]

    found, messages = _assert_same_as_alone(grays)

    assert len(messages) == 3  # no visible writing, blank or noise, only specks
    framed = found[int(np.flatnonzero(order == 2 * len(digits) + 4)[0])]
    assert framed.count == 1 and framed.ink[2, 80] == 0.0 and framed.ink[60, 72] > 0.5
    band = found[int(np.flatnonzero(order == 2 * len(digits) + 7)[0])]
    assert band.count == 1 and band.ink[2, 80] > 0.5


def test_ink_marks_many_takes_only_grayscale_images():
    assert ink_marks_many([]) == []
    with pytest.raises(ValueError, match="grayscale"):
        ink_marks_many([np.zeros((28, 28, 3), np.float32)])


def test_ink_marks_many_bounds_each_stack(digits, monkeypatch):
    stacks = []
    real = ink._stack_marks
    monkeypatch.setattr(ink, "STACK_PIXELS", 3 * 28 * 28)
    monkeypatch.setattr(ink, "_stack_marks", lambda stack, *a: stacks.append(len(stack))
                        or real(stack, *a))  # fmt: skip
    found = ink_marks_many(list(digits[:7]))
    assert stacks == [3, 3]  # and the seventh image alone, through ink_marks
    for digit, got in zip(digits[:7], found, strict=True):
        np.testing.assert_array_equal(got.labels, ink_marks(digit).labels)


def _random_page(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Paper of a random level and noise with a few blocks of random grey: sometimes
    quantised to eighths (ties at every threshold), sometimes inverted."""
    h, w = shape
    page = np.full(shape, rng.uniform(0.3, 1.0)) + rng.normal(0, rng.uniform(0, 0.05), shape)
    for _ in range(rng.integers(0, 6)):
        y, x = rng.integers(0, h), rng.integers(0, w)
        page[y : y + rng.integers(1, h // 2 + 2), x : x + rng.integers(1, w // 3 + 2)] = (
            rng.uniform(0, 1))
    if rng.random() < 0.3:
        page = np.round(page * 8) / 8
    page = np.clip(page, 0, 1).astype(np.float32)
    return 1.0 - page if rng.random() < 0.5 else page


def _at_the_threshold(top: float, k: int) -> np.ndarray | None:
    """A 28x28 page with ink at ``top`` and a block exactly at float32 of Otsu's threshold
    when it falls in bin ``k``, where float32 and float64 disagree about that block: only
    thresholds compared in float32, as ``ink_marks`` compares them, keep it on one side."""
    threshold = (k + 1) * (top / 256.0)
    level = np.float32(threshold)
    if float(level) == threshold or int(level * np.float32(255.0 / top)) != k:
        return None
    page = np.zeros((28, 28), np.float32)
    page[2:12, 3:6] = level
    page[14:24, 10:14] = top
    return page


@pytest.mark.parametrize("shape", [(28, 28), (5, 40), (64, 65), (300, 200)])
def test_ink_marks_many_matches_ink_marks_on_random_pages(shape):
    rng = np.random.default_rng(sum(shape))
    _assert_same_as_alone([_random_page(rng, shape) for _ in range(12)])


def test_ink_marks_many_matches_ink_marks_at_exact_thresholds():
    pages = [page for top in (0.61, 0.7, 0.77, 0.9, 0.93) for k in range(20, 200, 3)
             if (page := _at_the_threshold(top, k)) is not None]
    assert len(pages) >= 20
    _assert_same_as_alone(pages + [1.0 - p for p in pages])


def test_ink_marks_many_keeps_a_mark_exactly_at_the_minimum_area():
    page = np.full((300, 200), 0.9, np.float32)
    page[100:102, 50:53] = 0.1  # 6 pixels, exactly 1e-4 of the page: kept
    assert ink_marks(page).count == 1
    _assert_same_as_alone([page, page.copy()])


def _page_with(digit: np.ndarray, at: tuple[int, int], size: int = 120,
               shape: tuple[int, int] = (360, 480)) -> np.ndarray:
    """A light page (H, W) float32 with ``digit`` written dark at ``at`` (top, left)."""
    from PIL import Image

    page = np.full(shape, 0.9, np.float32)
    big = np.asarray(Image.fromarray(digit, mode="F").resize((size, size)), dtype=np.float32)
    top, left = at
    page[top : top + size, left : left + size] -= 0.75 * np.clip(big, 0.0, 1.0)
    return page


def test_a_band_of_shading_across_a_corner_is_a_frame(digits):
    # Paper shaded darkest along a diagonal that cuts the top left corner: the band's strong
    # ink runs along a fifth of the top and over a quarter of the left side, under 30 % of
    # either, and it is the edge of the shading all the same.
    page = _page_with(digits[6], (150, 250))
    yy, xx = np.mgrid[0:360, 0:480]
    page[np.abs(yy + xx - 150) < 50] = 0.2
    marks = ink_marks(page)
    assert marks.count == 1 and marks.ink[:, :200].max() == 0.0
    assert marks.ink[150:270, 250:370].max() > 0.5


def test_a_character_cut_by_a_corner_beside_others_is_no_frame():
    # A digit running along a quarter of the right side and crossing the top near the
    # corner, beside one clear of the sides: cut by the picture's corner, not shading.
    page = np.full((120, 200), 0.9, np.float32)
    page[30:90, 60:67] = 0.15
    page[0:30, 192:200] = page[0:10, 180:200] = 0.15
    assert ink_marks(page).count == 2


def test_writing_one_pixel_from_the_side_is_writing():
    # A 7 whose bar runs along the row inside the top one, beside a 1 clear of the sides.
    page = np.full((120, 300), 0.9, np.float32)
    page[1:8, 20:130] = page[1:100, 123:130] = 0.1
    page[30:90, 200:207] = 0.1
    marks = ink_marks(page)
    assert marks.count == 2 and marks.ink[4, 60] == 1.0


def test_a_frame_stays_a_frame_beside_writing_one_pixel_from_the_side():
    page = np.full((120, 160), 0.9, np.float32)
    page[:8], page[:, :8], page[:, -8:] = 0.1, 0.1, 0.1  # a table band on three sides
    page[40:119, 70:76] = 0.15  # a stroke ending one pixel above the bottom
    marks = ink_marks(page)
    assert marks.count == 1 and marks.ink[:8].max() == 0.0 and marks.ink[60, 72] > 0.5


def test_a_shadow_across_the_page_is_paper_not_ink(digits):
    lit = _page_with(digits[3], (30, 40))
    shadowed = lit.copy()
    shadowed[200:, 150:] *= 0.35  # a hand's shadow with a sharp edge, over the lower right
    shadowed[230:350, 300:420] -= 0.25 * (_page_with(digits[7], (0, 0))[:120, :120] < 0.5)
    marks = ink_marks(shadowed)
    assert marks.count >= 2  # the 3 and the 7 inside the shadow
    assert marks.ink[210, 250] == 0.0 and marks.ink[300, 160] == 0.0  # shadow, inside its edge
    assert marks.ink[290, 200] == 0.0  # the shadow's edge itself
    rows, cols = np.nonzero(marks.ink[:, :300] > 0.5)
    assert rows.max() < 150 and cols.max() < 160  # the 3 is all there is on the lit part


def _two_digits_in_a_glow(digits: np.ndarray) -> np.ndarray:
    """A 240x320 photo of a small 3 and 7 (thin strokes) 40 px apart, a faint haze (paper
    grain in a shadow, a lens's glow) around and between them, too faint for strong ink
    but not for weak."""
    shape = (240, 320)
    page = np.minimum(_page_with(digits[3], (60, 60), size=50, shape=shape),
                      _page_with(digits[7], (60, 150), size=50, shape=shape))
    page[50:120, 70:190] = np.minimum(page[50:120, 70:190], 0.82)
    return page


def test_a_faint_haze_between_characters_of_a_photo_does_not_join_them(digits):
    page = _two_digits_in_a_glow(digits)
    marks = ink_marks(page)
    assert marks.count == 2
    three, seven = marks.labels[:, 60:110], marks.labels[:, 150:200]
    assert np.unique(three[three > 0]).size == np.unique(seven[seven > 0]).size == 1
    assert three.max() != seven.max()
    # the haze far from the strokes is paper, the strokes are whole
    assert (marks.ink[50:120, 122:138] == 0).all()
    strokes = page < 0.5
    assert (marks.ink[strokes] > 0.5).mean() > 0.99
    _assert_same_as_alone([page, page.copy(), 1.0 - page])


def test_a_speck_in_the_haze_stays_paper(digits):
    # Cut free of the haze around it, one dark grain is a speck, as it is on clean paper.
    page = _two_digits_in_a_glow(digits)
    page[85, 130] = 0.3
    marks = ink_marks(page)
    assert marks.count == 2 and marks.labels[85, 130] == 0
    _assert_same_as_alone([page, page.copy()])


def test_a_blot_beside_the_writing_does_not_widen_its_reach(digits):
    # Each mark's weak ink is held to its own strokes' width: a thick blot elsewhere on the
    # page keeps its own, and the thin digits' haze still goes.
    page = _two_digits_in_a_glow(digits)
    page[150:210, 230:290] = 0.15
    marks = ink_marks(page)
    assert marks.count == 3 and (marks.ink[50:120, 122:138] == 0).all()
    _assert_same_as_alone([page, page.copy()])


def test_faint_ends_of_a_photos_strokes_are_kept():
    # A stroke tapering off (pen lifting) is weak ink next to strong ink: it stays.
    page = np.full((240, 320), 0.9, np.float32)
    page[40:200, 100:108] = 0.2
    page[200:215, 100:108] = 0.8  # the faint end, 15 px
    marks = ink_marks(page)
    assert marks.count == 1 and (marks.ink[200:215, 100:108] > 0).all()


def test_writing_on_a_page_more_than_half_in_shadow_is_the_dark_ink(digits):
    # The median falls in the shadow, so the lit paper lies farther from it than the ink:
    # but the lit paper covers a third of the page, and ink never does.
    page = _page_with(digits[0], (150, 60))
    page[:, :330] *= 0.45  # the shadow: its paper is 0.43, the lit paper 0.95
    marks = ink_marks(page)
    rows, cols = np.nonzero(marks.ink > 0.5)
    assert marks.count == 1 and rows.min() >= 150 and cols.max() < 200
    _assert_same_as_alone([page, 1.0 - page, page])  # a stack decides as one image does


@pytest.mark.parametrize("radius", [220, 240, 260])
def test_writing_on_a_page_mostly_in_shadow_is_the_dark_ink(digits, radius):
    # A hand's soft-edged shadow over all but a corner of the page (the lit paper 13-22 %
    # of it): the lit corner was taken for light ink (and a digit for its paper).
    page = _page_with(digits[2], (120, 150))
    yy, xx = np.mgrid[0:360, 0:480]
    penumbra = np.clip(np.hypot(xx - 170, yy - 180) - radius, 0, 20) / 20
    page *= (0.45 + 0.55 * penumbra).astype(np.float32)
    marks = ink_marks(page)
    rows, cols = np.nonzero(marks.ink > 0.5)
    assert marks.count == 1 and rows.min() >= 120 and rows.max() < 240
    assert cols.min() >= 150 and cols.max() < 270
    _assert_same_as_alone([page, page[::-1].copy()])


@pytest.mark.parametrize("label", [3, 8])
def test_a_light_digit_filling_a_grey_canvas_with_a_black_border_is_the_ink(digits, label):
    # The same grey levels as a page mostly in shadow (the light side an eighth to a quarter
    # of the picture, a little black): here the light strokes are the ink (review: read as
    # dark ink, '3' came back as '0\n0\n0').
    from PIL import Image

    big = Image.fromarray(digits[label], mode="F").resize((280, 280), Image.Resampling.BICUBIC)
    canvas = np.full((300, 300), 0.42, np.float32)
    canvas[10:290, 10:290] += (0.97 - 0.42) * np.clip(np.asarray(big, np.float32), 0, 1)
    canvas[:3], canvas[-3:], canvas[:, :3], canvas[:, -3:] = 0.03, 0.03, 0.03, 0.03
    marks = ink_marks(canvas)
    # the strokes are the ink; neither the black border nor the grey canvas is
    assert marks.ink[canvas > 0.8].mean() > 0.9 and marks.ink[canvas < 0.43].max() == 0.0


@pytest.mark.parametrize("dark", [True, False])
def test_a_tight_crop_of_a_thick_character_keeps_its_polarity(dark):
    # The character covers 36 % of the picture: the extreme far from the paper still is ink.
    gray = np.ones((100, 100), np.float32)
    for left in (10, 40, 70):
        gray[10:90, left : left + 15] = 0.0  # a marker's thick strokes, like a bold "m"
    marks = ink_marks(gray if dark else 1.0 - gray)
    assert marks.ink[50, 17] == 1.0 and marks.ink[50, 32] == 0.0


def test_a_thick_digit_joined_to_faint_shading_at_the_sides_is_kept(digits):
    # A marker 8 filling a photo whose paper darkens a little towards every side: the
    # faint shading links the digit to the sides, but its strong ink touches none.
    yy, xx = np.mgrid[-1:1:300j, -1:1:300j]
    page = (0.95 - 0.08 * (yy**2 + xx**2)).astype(np.float32)
    page -= 0.8 - _page_with(digits[8], (0, 0), size=280, shape=(300, 300)) / 0.9 * 0.8
    page = np.clip(page, 0.0, 1.0)
    marks = ink_marks(page)
    assert marks.count >= 1 and marks.ink[150, 5:295].max() > 0.5


def test_a_table_edge_along_one_side_is_a_frame(digits):
    page = _page_with(digits[2], (100, 180))
    page[:25] = 0.15  # the table beyond the top of the sheet
    marks = ink_marks(page)
    assert marks.ink[:25].max() == 0.0 and marks.ink[100:220, 180:300].max() > 0.5


@pytest.mark.parametrize("seed", range(6))
def test_squared_paper_is_erased_and_the_digit_kept(digits, seed):
    from ocr_service.preprocess import decode_image
    from ocr_testing.renderings import grid_paper_photo

    rng = np.random.default_rng(seed)
    blank = decode_image(grid_paper_photo(np.zeros((28, 28), np.float32), rng))
    with pytest.raises(NoInkError):
        ink_marks(blank)
    written = decode_image(grid_paper_photo(digits[seed], rng))
    marks = ink_marks(written)
    rows, cols = np.nonzero(marks.ink > 0.5)
    # everything left is the digit: at most 170 px across, not lines across the page
    assert rows.max() - rows.min() < 180 and cols.max() - cols.min() < 180


@pytest.mark.parametrize("seed", range(6))
def test_the_table_in_a_corner_of_a_photo_is_no_mark(digits, seed):
    from ocr_service.preprocess import decode_image
    from ocr_testing.renderings import table_corner

    marks = ink_marks(decode_image(table_corner(digits[seed], np.random.default_rng(seed))))
    rows, cols = np.nonzero(marks.ink > 0.5)
    # all that is left is the digit, written in the middle of the sheet
    assert marks.count == 1 and rows.min() >= 115 and cols.min() >= 155
    assert rows.max() < 365 and cols.max() < 485


@pytest.mark.parametrize("seed", [42, 70, 130, 136, 196])
def test_blank_squared_paper_printed_faintly_is_blank(seed):
    # Pages whose grid lines have ink along only about half of their length one way or
    # both ways (a confident digit or hundreds of characters came back before).
    from ocr_service.preprocess import decode_image
    from ocr_testing.renderings import grid_paper_photo

    rng = np.random.default_rng(10_000 + seed)
    with pytest.raises(NoInkError):
        ink_marks(decode_image(grid_paper_photo(np.zeros((28, 28), np.float32), rng)))


def _squared(page: np.ndarray, step: int, level: float, dash: int) -> None:
    """Print a grid of ``step`` px cells on ``page`` in 2-px dashes of ``dash`` px, one every
    ``2 * dash`` px (worn print: half of each line inked), each dash a mark of its own."""
    h, w = page.shape
    paper = page.copy()
    for y in range(step // 2, h, step):
        for x in range(0, w, 2 * dash):
            page[y : y + 2, x : x + dash] = level
    for x in range(step // 2, w, step):
        for y in range(0, h, 2 * dash):
            page[y : y + dash, x : x + 2] = level
    for y in range(step // 2, h, step):  # the lines do not join where they cross
        for x in range(step // 2, w, step):
            page[y - 1 : y + 3, x - 1 : x + 3] = paper[y - 1 : y + 3, x - 1 : x + 3]


def test_a_character_on_faint_squared_paper_is_all_that_is_left():
    page = np.full((300, 400), 0.93, np.float32)
    _squared(page, 24, 0.3, 12)
    page[100:200, 195:201] = 0.1  # a 1
    marks = ink_marks(page)
    rows, cols = np.nonzero(marks.ink > 0.5)
    assert marks.count == 1 and rows.min() >= 99 and cols.max() <= 201


def test_a_long_thin_stroke_between_faint_grid_lines_is_writing():
    # Rows printed in full, columns in dashes: the columns are found with the faint bar,
    # and a thin 1 half the page tall between two of them is as long as they are.
    page = np.full((300, 400), 0.93, np.float32)
    for y in range(12, 300, 24):
        page[y : y + 2] = 0.3
    for x in range(12, 400, 24):
        for y in range(0, 300, 24):
            page[y : y + 12, x : x + 2] = 0.3
    page[60:210, 197:200] = 0.1  # the 1, 3 px wide, between the columns at 180 and 204
    marks = ink_marks(page)
    assert (marks.ink[60:210, 197:200] > 0.5).mean() > 0.9
    assert marks.ink[:, 300:].max() == 0.0  # the grid is gone


@pytest.mark.parametrize("transpose", [False, True])
def test_a_double_underline_is_not_a_ruling_to_space_out(transpose):
    # Two 1-px lines 2 px apart are two thin lines whose margins join into one: there is no
    # spacing to continue (the request failed with a 500 before).
    gray = np.full((200, 150), 0.92, np.float32)
    gray[150, 10:140] = gray[152, 10:140] = 0.3
    gray[60:140, 70:74] = 0.15  # a 1
    marks = ink_marks(gray.T if transpose else gray)
    ink = marks.ink.T if transpose else marks.ink
    assert ink[100, 71] > 0.99


def test_a_strip_far_wider_than_tall_is_read():
    gray = np.full((48, 4000), 0.92, np.float32)
    gray[10:40, 100:104] = 0.1
    assert ink_marks(gray).ink[20, 101] > 0.99


def test_a_big_character_with_long_bars_is_not_taken_for_ruling():
    gray = np.full((200, 200), 0.95, np.float32)
    gray[20:26, 10:190] = 0.1  # two long, thin bars like a Z's, 90% of the width
    gray[170:176, 10:190] = 0.1
    gray[26:170, 90:96] = 0.1
    marks = ink_marks(gray)
    assert marks.ink[23, 100] == pytest.approx(1.0) and marks.ink[173, 100] == pytest.approx(1.0)


def test_a_stroke_crossing_a_printed_line_is_not_cut():
    gray = np.full((240, 320), 0.92, np.float32)
    for y in range(20, 240, 30):
        gray[y : y + 2] = 0.7  # ruled lines
    gray[35:195, 150:156] = 0.1  # a 1 written across five of them
    marks = ink_marks(gray)
    assert marks.ink[50, 60] == 0.0  # the ruling is gone ...
    assert (marks.ink[35:195, 153] > 0.5).all()  # ... and the 1 is whole


def test_low_contrast_ballpoint_on_beige_paper_is_ink(digits):
    # Grey-blue ballpoint on beige, under a lighting gradient and sensor noise: the strokes
    # stand out by about seven noise levels, not the dozens a clean scan has.
    rng = np.random.default_rng(0)
    page = _page_with(digits[4], (100, 150), size=120)
    paper = 0.82 * np.linspace(1.0, 0.85, 480)[None, :] + rng.normal(0, 0.042, (360, 480))
    gray = np.where(page < 0.5, 0.55 * np.linspace(1.0, 0.85, 480)[None, :], paper)
    marks = ink_marks(gray.astype(np.float32))
    rows, cols = np.nonzero(marks.ink > 0.5)
    assert rows.min() >= 100 and rows.max() < 225 and cols.min() >= 150 and cols.max() < 275


@pytest.mark.parametrize("dark", [True, False])
def test_writing_on_paper_shaded_from_black_to_white_keeps_its_polarity(digits, dark):
    # A diagonal gradient over the whole range puts an eighth of the pixels near each
    # extreme: the levels cannot tell ink from paper, the strokes' neighbourhoods can.
    yy, xx = np.mgrid[0:1:300j, 0:1:300j]
    page = ((xx + yy) / 2).astype(np.float32)
    stroke = _page_with(digits[6], (40, 60), size=220, shape=(300, 300)) < 0.5
    page[stroke] = 0.0
    marks = ink_marks(page if dark else 1.0 - page)
    rows, cols = np.nonzero(marks.ink > 0.5)
    assert (marks.ink[stroke & (xx + yy > 0.6)] > 0.5).mean() > 0.9  # the 6, where it shows
    assert rows.min() >= 40 and cols.min() >= 60 and (marks.ink[~stroke] > 0.5).mean() < 0.01
    _assert_same_as_alone([page, 1.0 - page])


def test_a_page_on_a_dark_desk_keeps_its_dark_ink():
    # The desk, a third of the photo, and the page lit from 0.85 to 0.95 put an eighth of the
    # pixels past half-way to each extreme, but the light side has little contrast to offer.
    page = np.zeros((750, 1000), np.float32)
    page[75:675, 100:900] = 1.0
    gray = 0.12 + (0.85 + 0.1 * np.linspace(0.0, 1.0, 1000)[None, :] - 0.12) * page
    gray[250:500, 300:306] *= 0.25  # a 1
    marks = ink_marks(gray.astype(np.float32))
    assert marks.count == 1 and (marks.ink[250:500, 300:306] > 0.5).all()


def _drawn(strokes: list[tuple[tuple[int, ...], int, int]]) -> np.ndarray:
    """A 200x200 white page (float32) with ``strokes``: (line, pen width, grey level 0..255)."""
    from PIL import Image, ImageDraw

    image = Image.new("L", (200, 200), 255)
    draw = ImageDraw.Draw(image)
    for line, width, level in strokes:
        draw.line(line, fill=level, width=width)
    return np.asarray(image, np.float32) / 255.0


def _crossed_one() -> np.ndarray:
    """A thick marker 1 (14 px) with four lines (2 and 4 px) drawn across it, and a blot
    (7 px) on one of them away from the 1, where the pen rested."""
    return _drawn([((100, 20, 100, 180), 14, 0), ((70, 55, 100, 20), 12, 0),
                   ((0, 30, 160, 200), 2, 0), ((0, 130, 200, 90), 2, 0),
                   ((130, 0, 80, 200), 2, 0), ((0, 155, 200, 85), 4, 0),
                   ((166, 97, 172, 96), 7, 0)])


def test_thin_lines_drawn_across_thick_writing_are_erased():
    page = _crossed_one()
    marks = ink_marks(page)
    cols = np.nonzero(marks.ink > 0.5)[1]
    assert marks.count == 1 and cols.min() >= 55 and cols.max() <= 115  # the 1, no lines
    assert (marks.ink[25:175, 98:103] > 0.5).all()  # whole where they crossed it
    _assert_same_as_alone([page, 1.0 - page])


@pytest.mark.parametrize("level", [0, 150])
def test_thick_writing_keeps_its_thinner_and_fainter_strokes(level):
    # A 7: a 5 px stem under an 8 px bar along the top of its box, then a 14 px marker 7
    # whose bar is fainter (grey ``level``) and ends in a short 3 px flourish.
    seven = _drawn([((150, 30, 90, 190), 5, 0), ((40, 30, 150, 30), 8, 0)])
    assert (ink_marks(seven).ink[40:185].max(axis=1) > 0.5).all()  # the stem is kept
    marker = _drawn([((150, 40, 90, 180), 14, 0), ((50, 40, 150, 40), 14, level),
                     ((50, 40, 35, 60), 3, level)])
    marks = ink_marks(marker)
    assert (marks.ink[36:45, 55:130] > 0).all() and marks.ink[50:56, 40:45].max() > 0


def test_thin_writing_and_a_thick_blot_are_left_alone():
    from PIL import Image, ImageDraw

    thin = _crossed_one()
    thin[:, 80:125] = 1.0  # the lines without the 1: nothing thicker to be thinner than
    assert np.count_nonzero(ink_marks(thin).ink > 0.5) > 0.9 * np.count_nonzero(thin < 0.5)
    image = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(image).ellipse([10, 75, 60, 125], fill=0)  # a blot 50 px across ...
    ImageDraw.Draw(image).line([(0, 100), (200, 100)], fill=0, width=2)  # ... and a line
    blot = np.asarray(image, np.float32) / 255.0
    assert (ink_marks(blot).ink[100, 60:] > 0.5).all()


def _page_with_a_shadow_cap(centre: tuple[int, int], radius: int, pencil: float = 0.0
                            ) -> np.ndarray:
    """A 240x320 photo: a 7 in dark ink (and, with ``pencil`` > 0, a 1 that much lighter),
    and the soft-edged shadow of a hand's fingertip (light halved, a 20-pixel penumbra)
    reaching in from below, too short along the side to be a frame."""
    rng = np.random.default_rng(0)
    gray = np.full((240, 320), 0.9, np.float32) + rng.normal(0, 0.01, (240, 320)).astype(
        np.float32)
    gray[60:160, 150:160], gray[60:70, 120:160] = 0.15, 0.15
    if pencil:
        gray[60:160, 60:68] = 0.9 - (0.9 - 0.15) * (1.0 - pencil)
    yy, xx = np.mgrid[0:240, 0:320]
    penumbra = np.clip(np.hypot(xx - centre[0], yy - centre[1]) - radius, 0, 20) / 20
    return gray * (0.45 + 0.55 * penumbra).astype(np.float32)


@pytest.mark.parametrize(("centre", "radius"), [((200, 260), 40), ((60, 260), 40),
                                                ((250, 255), 30), ((200, 250), 30)])
def test_the_soft_edge_of_a_shadow_beside_writing_is_no_mark(centre, radius):
    # The penumbra stands out of the paper less than any stroke does, however much of the
    # writing's contrast it reaches; it was read as a character of its own ("7" -> "7\n2").
    page = _page_with_a_shadow_cap(centre, radius)
    marks = ink_marks(page)
    assert marks.count == 1 and marks.boxes[marks.labels[100, 155]].tolist() == [120, 60, 40,
                                                                                  100]
    _assert_same_as_alone([page, _page_with_a_shadow_cap((60, 260), 40)])


@pytest.mark.parametrize("lighter", [0.25, 0.4, 0.6])
def test_a_lighter_stroke_beside_dark_writing_stays(lighter):
    # a 1 in pencil a quarter to 60 % lighter than the 7 in ink beside it, with the shadow's
    # penumbra in the picture: no stroke clear of the sides is shading (review: a digit in a
    # paler pen, or written as a pen ran dry, was dropped)
    marks = ink_marks(_page_with_a_shadow_cap((200, 260), 40, pencil=lighter))
    assert marks.count == 2 and marks.labels[100, 64] > 0


@pytest.mark.parametrize("lighter", [0.25, 0.6])
def test_a_lighter_stroke_on_a_page_with_no_mark_at_a_side_stays(lighter):
    # the fingertip's shadow out of the picture: no mark reaches a side, so none is shading
    # and the 1 in pencil stays beside the 7 in ink, alone and in a stack
    page = _page_with_a_shadow_cap((160, 1000), 0, pencil=lighter)
    marks = ink_marks(page)
    assert marks.count == 2 and marks.labels[100, 64] > 0 and marks.labels[100, 155] > 0
    _assert_same_as_alone([page, page.copy()])
