"""Grayscale image -> ink map and marks: where the writing is, stroke by stroke.

Polarity and paper level come from the image itself, Otsu's threshold and a robust noise
level separate ink from paper, and 8-connected marks too small to be writing (specks) or
framing a photographed page are dropped, as are printed ruling and thin lines drawn across
thick writing. ``ink_marks`` reads one image;
``ink_marks_many`` reads images of one size as one stack, with the same results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import imageops
from .image_errors import NoInkError

__all__ = ["STACK_PIXELS", "InkMarks", "ink_from_gray", "ink_marks", "ink_marks_many"]

#: Pixels in one stack of ``ink_marks_many`` at most: its arrays take about 40 bytes a
#: pixel at their peak (10 MB here). Stacking pays for small images, where each numpy
#: call's fixed cost is what counts: 334 uploads of 28x28 fit, three of 280x280.
STACK_PIXELS = 1 << 18


_BIN_CENTRES = np.arange(256) + 0.5

# The rules of an ink map, named once for ``ink_marks`` and its stacked twin
# ``_stack_marks``, which must agree bit for bit (tests/unit/test_ink.py compares them). Plain
# Python floats on purpose: against float32 pixels they compare in float32.
#: Ink must stand out from the paper by this much (of the 0..1 range) at least.
MIN_CONTRAST = 0.08
#: Order statistics of the grey levels: the darkest, the paper (median), the lightest, and
#: between them how far the lightest and darkest quarters and eighths reach (``_dark_ink``).
_LEVEL_QUANTILES = (0.001, 0.125, 0.25, 0.5, 0.75, 0.875, 0.999)
_MEDIAN = _LEVEL_QUANTILES.index(0.5)
#: Median absolute deviation -> standard deviation of normal noise.
_MAD_TO_SIGMA = 1.4826
#: Floor of the paper's noise level, so that clean synthetic images work.
_MIN_SIGMA = 0.004
#: Strong ink lies above Otsu's threshold and this many noise levels.
_STRONG_SIGMAS = 4.0
#: The ink level is this quantile of the strong ink ...
_INK_QUANTILE = 0.75
#: ... and writing stands out from the paper's noise by at least this many noise levels
#: (sigma); less is a blank page, noise or a texture (or under the minimum contrast).
_INK_SIGMAS = 6.0
#: Weak ink, what marks are made of, lies above this many noise levels and this level.
_WEAK_SIGMAS = 4.0
_WEAK_FLOOR = 0.02
#: A mark is kept when its strong ink covers this many pixels, this share of the image,
#: and this share of the largest mark's strong ink.
_MIN_MARK_AREA = 3.0
_MIN_MARK_SHARE = 1e-4
_MIN_MARK_OF_LARGEST = 0.04
#: A mark reaching a side of the picture that nowhere gets this dark (of the ink level),
#: beside one that does, is shading (a shadow's soft edge), not writing.
_SHADING = 0.7


def _mark_floor(pixels: int) -> float:
    """The strong ink a mark needs in a picture of ``pixels`` pixels, whatever the others'."""
    return max(_MIN_MARK_AREA, _MIN_MARK_SHARE * pixels)


def _min_mark_area(pixels: int, largest: Any) -> Any:
    """The strong ink a mark needs in a picture of ``pixels`` pixels whose largest mark has
    ``largest`` (a number, or an array of them, one per picture of a stack)."""
    return np.maximum(_mark_floor(pixels), _MIN_MARK_OF_LARGEST * largest)


def _sample(values: np.ndarray) -> np.ndarray:
    """``values`` (..., S) with rows of over 2 * 65536 values subsampled to ~65k each,
    plenty for quantiles."""
    size = values.shape[-1]
    return values[..., :: size // 65536] if size > 2 * 65536 else values


def _rank(q: float, n: int) -> int:
    return min(int(q * n), n - 1)


def _quantiles(values: np.ndarray, *qs: float) -> list[float]:
    """Lower order statistics at fractions ``qs`` of an array (no interpolation).

    One ``np.partition`` call: ``np.percentile`` costs more than the rest of a small upload's
    ink map.
    """
    flat = _sample(values.ravel())
    ks = [_rank(q, flat.size) for q in qs]
    part = np.partition(flat, ks)
    return [float(part[k]) for k in ks]


def _magnitude_median(x: np.ndarray) -> float:
    """``_quantiles(np.abs(x), 0.5)[0]``, without a partition when more than half of
    ``x`` is exactly 0, as a clean canvas's paper is: the median is 0 then."""
    flat = np.abs(_sample(x.ravel()))
    k = _rank(0.5, flat.size)
    if flat.size - np.count_nonzero(flat) > k:
        return 0.0
    return float(np.partition(flat, k)[k])


#: Images of up to this many pixels are small: per numpy call, the fixed cost outweighs the
#: work, so their quantiles in a stack come from one sort of every row
#: (``_row_quantiles``); larger ones are taken image by image.
_SMALL_IMAGE = 4096


def _row_quantiles(values: np.ndarray, mask: np.ndarray, q: float) -> np.ndarray:
    """``_quantiles(row[keep], q)`` of every row of ``values`` and ``mask`` (N, S): float64
    (N,), 0 for a row with nothing masked."""
    if values.shape[1] > _SMALL_IMAGE:
        chosen = (row[keep] for row, keep in zip(values, mask, strict=True))
        return np.array([_quantiles(v, q)[0] if v.size else 0.0 for v in chosen])
    # One sort of all rows, the masked values first in each: short rows have no subsample.
    counts = np.count_nonzero(mask, axis=1)
    ordered = np.sort(np.where(mask, values, np.float32(np.inf)), axis=1)
    ranks = np.minimum((q * counts).astype(np.intp), np.maximum(counts - 1, 0))
    picked = ordered[np.arange(len(values)), ranks].astype(np.float64)
    return np.where(counts > 0, picked, 0.0)


def _otsu_bins(hist: np.ndarray, step: float | np.ndarray) -> np.ndarray:
    """Otsu's split of each histogram ``hist`` (..., 256) float64 whose bins are ``step``
    wide (a float, or (..., 1)): how many bins (int, (...)) fall below the threshold."""
    w0 = np.cumsum(hist, axis=-1)
    m0 = np.cumsum(hist * (_BIN_CENTRES * step), axis=-1)
    total, mean_total = w0[..., -1:], m0[..., -1:]
    weights = w0 * (total - w0)
    # An empty class (weights 0) cannot be the split: -1 is below every real score.
    between = np.divide((mean_total * w0 - m0 * total) ** 2, weights,
                        out=np.full(hist.shape, -1.0), where=weights > 0)
    return np.argmax(between, axis=-1) + 1


def _otsu(values: np.ndarray, top: float) -> float:
    """Otsu's threshold of ``values`` (1-D, in [0, top])."""
    hist = np.bincount(
        np.minimum((values * (255.0 / top)).astype(np.intp), 255), minlength=256
    ).astype(np.float64)
    return float(_otsu_bins(hist, top / 256.0) * (top / 256.0))


def _row_otsu(x: np.ndarray, top: np.ndarray) -> np.ndarray:
    """Otsu's threshold (N,) float64 of the positive values of each row of ``x`` (N, S);
    ``top`` (N,) float64 is each row's maximum, > 0."""
    n = len(x)
    bins = np.minimum((x * (255.0 / top).astype(np.float32)[:, None]).astype(np.intp), 255)
    bins += np.arange(0, 256 * n, 256)[:, None]
    hist = np.bincount(bins[x > 0], minlength=256 * n).reshape(n, 256).astype(np.float64)
    return _otsu_bins(hist, top[:, None] / 256.0) * (top / 256.0)


#: Images with a shorter side than this get one paper level, larger ones a local level.
_LOCAL_BACKGROUND_SIDE = 48
#: The local level is found on a copy reduced to about this many pixels on its shorter side:
#: lighting varies slowly, and the reduced copy makes its cost independent of the upload.
_BACKGROUND_SIDE = 96
#: A paper level changing by more than this between neighbouring pixels of the reduced copy
#: has a sharp edge (a shadow's, a page's) that scaling up blurs: it is restored at full size.
_SHARP_STEP = 0.05


def _rebuild(marker: np.ndarray, mask: np.ndarray, steps: int, *, settle: bool = False
             ) -> np.ndarray:
    """``steps`` geodesic dilations of ``marker`` under ``mask`` (both (H, W), marker <=
    mask): grey reconstruction within ``steps`` pixels of what ``marker`` holds. With
    ``settle``, it stops early once nothing changes (a check worth its cost on small
    images only)."""
    for _ in range(steps):
        grown = imageops.dilate(marker, 3)
        np.minimum(grown, mask, out=grown)
        if settle and np.array_equal(grown, marker):
            break
        marker = grown
    return marker


def _reduced(x: np.ndarray) -> tuple[np.ndarray, int]:
    """``x`` (H, W) reduced by block means to about ``_BACKGROUND_SIDE`` pixels on its
    shorter side, and the reduction factor (1: ``x`` itself, already that small)."""
    h, w = x.shape
    factor = max(1, min(h, w) // _BACKGROUND_SIDE)
    return (imageops.resize(x, w // factor, h // factor) if factor > 1 else x), factor


def _background(x: np.ndarray, median: np.float32) -> np.ndarray | np.float32:
    """Local paper level of ``x`` (ink high).

    A grey opening (a minimum then a maximum over a square a third of the shorter side)
    takes away every stroke narrower than the square and keeps what is wider: shadows,
    lighting gradients, the page edges of a photo, so that ``x`` minus it leaves the
    writing alone. It runs on a copy reduced to about ``_BACKGROUND_SIDE`` pixels (block
    means, which also smooth the paper's noise); scaled back up, a few steps of grey
    reconstruction under the image less its noise restore the sharp edges and corners of
    shadows that the reduced copy blurred. Small images get one global level, ``median``
    (``x``'s, as ``_quantiles`` gives it).
    """
    h, w = x.shape
    if min(h, w) < _LOCAL_BACKGROUND_SIDE:
        return median
    small, factor = _reduced(x)
    if factor == 1:  # not reduced, so its noise is not averaged away: take the peaks out
        small = _denoised(x)
    size = 2 * (min(small.shape) // 6) + 1
    # Grown into the corners the square could not reach (a shadow's rounded end), under
    # the image with its thin strokes taken out, so that growth never runs along writing.
    level = _rebuild(imageops.opening(small, size), imageops.erode(small, 3), size // 2,
                     settle=True)
    if factor == 1:
        return level
    sharp = max(np.abs(np.diff(level, axis=0)).max(initial=0.0),
                np.abs(np.diff(level, axis=1)).max(initial=0.0)) > _SHARP_STEP
    level = imageops.resize(level, w, h)
    if not sharp:  # lighting that varies slowly: the scaled-up level is exact enough
        return level
    denoised = _denoised(x)
    np.minimum(level, denoised, out=level)
    return _rebuild(level, denoised, factor)


def _denoised(x: np.ndarray) -> np.ndarray:
    """``x`` without its single-pixel peaks of noise, with the steps of shadow edges intact
    (a 3x3 grey opening)."""
    return imageops.opening(x, 3)


#: A printed line of ruled or squared paper runs straight across at least this share of the
#: page; a character's longest stroke stops short of it. Two such lines make paper ruled.
_RULE_SPAN = 0.6
#: On a page found ruled, its other lines need ink along this share of their row.
_RULE_FAINT = 0.35
#: Lines it takes to make paper ruled: long ones, or faint ones (see ``_ruling``).
_RULE_LEAST = 2
_RULE_LEAST_FAINT = 3
#: A line running out of the picture at a side counts when this share of it is inside.
_RULE_PIECE = 0.25
#: Slopes tried for printed lines: a page photographed up to 3 degrees askew.
_RULE_SLOPES = np.tan(np.radians(np.arange(-3.0, 3.01, 0.5)))
#: Rows a printed line takes at most (blurred by the lens and JPEG), and how far from it the
#: ink count must have dropped.
_RULE_THICKNESS = 4
_RULE_GAP = 3
#: The page's tilt is found from every this-many-th column of ink.
_TILT_COLUMNS = 4
#: A stroke crossing a printed line has ink within this many pixels above and below it.
_CROSSING_REACH = 4


def _shifted_any(mask: np.ndarray, reach: int, down: bool) -> np.ndarray:
    """Whether each pixel has ``mask`` within ``reach`` pixels above it (``down``: below)."""
    out = np.zeros_like(mask)
    for k in range(1, reach + 1):
        if down:
            out[:-k] |= mask[k:]
        else:
            out[k:] |= mask[:-k]
    return out


def _thin_lines(counts: np.ndarray, span: np.ndarray) -> tuple[np.ndarray, int]:
    """Rows (bool per row, with a row of margin each side) of the thin lines among rows
    with ``counts`` of ink of at least their ``span``, and how many lines there are.

    A printed line is at most ``_RULE_THICKNESS`` rows thick and stands alone: a few rows
    off, the ink count drops below half of ``span``. The top of a thick, wide character
    (a big 0 filling the picture) has a long run of ink too, but over many rows in a row.
    """
    lines = np.zeros(counts.size, bool)
    long = np.flatnonzero(counts >= span)
    found = 0
    for band in np.split(long, np.flatnonzero(np.diff(long) > 1) + 1) if long.size else ():
        above, below = band[0] - _RULE_GAP, band[-1] + _RULE_GAP
        alone = (above < 0 or counts[above] < span[band[0]] / 2) and (
            below >= counts.size or counts[below] < span[band[-1]] / 2)
        if band.size <= _RULE_THICKNESS and alone:
            lines[max(band[0] - 1, 0) : band[-1] + 2] = True
            found += 1
    return lines, found


def _centres(lines: np.ndarray) -> np.ndarray:
    """Centre rows (float64) of the runs of True in ``lines`` (bool per row)."""
    edges = np.flatnonzero(np.diff(np.r_[False, lines, False]))
    return (edges[0::2] + edges[1::2] - 1) / 2.0


def _ruled_rows(lines: np.ndarray) -> np.ndarray:
    """Rows (bool, like ``lines``) within a row of an evenly spaced ruling through most of
    ``lines`` (bool per row, each line with a row of margin).

    Its spacing is the typical one between the lines and its phase the one most of them
    share, both then fitted to those lines: a long stroke of writing among them moves
    neither, and the positions do not drift across a page of many lines."""
    centres = _centres(lines)
    ruled = np.zeros_like(lines)
    if centres.size < 2:  # lines so close that their margins join (a double underline)
        return ruled
    step = float(np.median(np.diff(centres)))
    if step < 2 * _RULE_GAP:
        return ruled
    residues = centres % step
    apart = np.abs((residues[:, None] - residues + step / 2) % step - step / 2)
    phase = float(residues[int(np.argmax(np.count_nonzero(apart <= 1.5, axis=1)))])
    index = np.rint((centres - phase) / step)
    on = np.abs(centres - phase - index * step) <= 1.5
    if np.ptp(index[on]) > 0:
        step, phase = np.polyfit(index[on], centres[on], 1)
    at = phase + step * np.arange(np.ceil(-phase / step), (lines.size - phase) / step)
    for offset in (-1, 0, 1):
        rows = np.rint(at).astype(np.intp) + offset
        ruled[rows[(rows >= 0) & (rows < lines.size)]] = True
    return ruled


@dataclass(frozen=True)
class _Shear:
    """The ink of an image's rows counted along the page's tilt (``_shear``)."""

    #: (W,) intp: per column, the sheared row that holds image row 0 (row y: y + first)
    first: np.ndarray
    #: (S,) float64: ink per sheared row, above the level that every row has
    excess: np.ndarray
    #: (S,) float64: pixels of each sheared row inside the image; inf where too few
    inside: np.ndarray


def _shear(mask: np.ndarray) -> _Shear | None:
    """The rows of ``mask`` (H, W; ink) sheared by the slope among ``_RULE_SLOPES`` that
    gathers its ink into the sharpest row histogram (the page's tilt); None when it has
    too little ink for any ruling. Pass the transpose for the columns."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    if ys.size < min(_RULE_LEAST * _RULE_SPAN, _RULE_LEAST_FAINT * _RULE_FAINT) * w:
        return None
    reach = int(np.ceil(w * _RULE_SLOPES[-1]))
    size = h + 2 * reach
    shifts = np.rint(np.arange(w) * _RULE_SLOPES[:, None]).astype(np.intp)
    # The tilt from every _TILT_COLUMNS-th column: a printed line crosses them all.
    tilt_ys, tilt_cols = np.nonzero(mask[:, ::_TILT_COLUMNS])
    tilt_xs = tilt_cols * _TILT_COLUMNS
    best, best_score = 0, -1.0
    for k, shift in enumerate(shifts):
        counts = np.bincount(tilt_ys - shift[tilt_xs] + reach, minlength=size)
        score = float(np.dot(counts, counts.astype(np.float64)))  # sum of squares
        if score > best_score:
            best, best_score = k, score
    best_counts = np.bincount(ys - shifts[best][xs] + reach, minlength=size)
    # A line leaving the picture at a side is measured against the part of its row inside
    # the picture: column c holds sheared rows reach - shift[c] .. reach - shift[c] + h - 1.
    first = reach - shifts[best]
    inside = np.cumsum(np.bincount(first, minlength=size + h)
                       - np.bincount(first + h, minlength=size + h))[:size]
    rows = inside >= _RULE_PIECE * w
    if not rows.any():  # a strip too narrow for its tilt to leave any row inside
        return None
    # Lines across the other way add to every row alike: count only ink above that level.
    excess = best_counts - np.median(best_counts[rows])
    return _Shear(first, excess, np.where(rows, inside, np.inf))


def _ruled(shear: _Shear, span: float, least: int) -> np.ndarray | None:
    """The printed lines (bool per sheared row) when at least ``least`` thin lines have ink
    along ``span`` of their row, else None.

    Lines with ink along ``_RULE_SPAN`` of their row are printed wherever they lie. Fainter
    ones (``_RULE_FAINT``) only where the ruling's even spacing puts a line: a long stroke
    of writing between them is left alone, and with a lower ``span`` it takes ``least`` of
    them on the ruling to make one."""
    lines, found = _thin_lines(shear.excess, span * shear.inside)
    if found < least:
        return None
    faint = (lines if span == _RULE_FAINT
             else _thin_lines(shear.excess, _RULE_FAINT * shear.inside)[0])
    ruled = faint & _ruled_rows(lines | faint)
    if span >= _RULE_SPAN:
        return lines | ruled
    return ruled if _centres(ruled).size >= least else None


def _ruling(shears: list[_Shear | None]) -> list[np.ndarray | None]:
    """``_ruled`` lines of the rows and of the columns (their ``shears``; None: no ink).

    Two lines with a long run of ink make a direction ruled. Paper ruled one way is often
    squared, so the other way's lines need only a faint run (and one more of them); paper
    printed faintly both ways is squared when both ways have faint, evenly spaced lines.
    """
    def found(k: int, span: float, least: int) -> np.ndarray | None:
        shear = shears[k]
        return None if shear is None else _ruled(shear, span, least)

    strong = [found(k, _RULE_SPAN, _RULE_LEAST) for k in (0, 1)]
    faint = [s if s is not None else found(k, _RULE_FAINT, _RULE_LEAST_FAINT)
             for k, s in enumerate(strong)]
    if strong[0] is None and strong[1] is None and (faint[0] is None or faint[1] is None):
        return [None, None]
    return faint


def _erase_ruling(x: np.ndarray) -> None:
    """Set to 0 (paper) the pixels of ``x`` (H, W; ink high, paper near 0) on the printed
    lines of ruled or squared paper, rows and columns."""
    sigma = _MAD_TO_SIGMA * _magnitude_median(x[::2, ::2])
    # Faint print counts too: noise adds a little to every row, a line a lot to one.
    mask = x > max(2.5 * sigma, 0.02)
    shears = [_shear(mask), _shear(mask.T)]
    for (image, ink), shear, lines in zip(((x, mask), (x.T, mask.T)), shears,
                                          _ruling(shears), strict=True):
        if shear is not None and lines is not None:
            _erase_lines(image, ink, shear, lines)


def _erase_lines(x: np.ndarray, mask: np.ndarray, shear: _Shear, lines: np.ndarray) -> None:
    """Erase from ``x`` (H, W) and its ink ``mask`` (H, W) the printed ``lines`` (bool per
    sheared row of ``shear``), the faint pixels below the mask's threshold too. Where a
    stroke crosses a line (ink just above and below it), the line's pixels are kept, so
    the stroke is not cut."""
    on_line = lines[np.arange(x.shape[0])[:, None] + shear.first]
    strokes = mask & ~on_line
    crossing = _shifted_any(strokes, _CROSSING_REACH, down=False)
    crossing &= _shifted_any(strokes, _CROSSING_REACH, down=True)
    erased = on_line & ~crossing
    x[erased] = 0.0
    mask &= ~erased


#: Paper this dark (its brightness, 0..1) or darker has its ink contrast scaled up as if
#: it were this bright, no more: noise grows with the scale.
_DARKEST_PAPER = 0.25


def _writing(x: np.ndarray, median: np.float32, dark_ink: bool) -> np.ndarray:
    """``x`` (H, W; ink high) less its paper level (``_background``), with the printed
    lines of ruled or squared paper erased, on images large enough for a local level.

    Dark ink on light paper is measured against the paper's brightness (its Weber
    contrast): a shadow dims paper and ink alike, so writing in the shadow of a hand keeps
    the contrast it has in the light.
    """
    level = _background(x, median)
    out = x - level
    if min(x.shape) >= _LOCAL_BACKGROUND_SIDE:
        if dark_ink:
            out /= np.maximum(np.float32(1.0) - level, np.float32(_DARKEST_PAPER))
        _erase_ruling(out)
    return out


def _label(ink: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """8-connected components of a stack of masks (N, H, W): labels (N, H, W) int32
    numbered 1.. in raster order through the stack (each image's after the previous
    image's), their boxes (L + 1, 4) ``(x, y, w, h)`` within their image, and how many
    each image has (N,).

    The images are labelled as one tall image, each with a row of paper below it so that
    no mark runs on into the next: one call instead of one per image."""
    n, h, w = ink.shape
    tall = np.zeros((n, h + 1, w), bool)
    tall[:, :h] = ink
    labels, _, boxes = imageops.label(tall.reshape(n * (h + 1), w))
    owner, boxes[1:, 1] = np.divmod(boxes[1:, 1], h + 1)
    counts = np.bincount(owner, minlength=n)
    return np.ascontiguousarray(labels.reshape(n, h + 1, w)[:, :h]), boxes, counts


#: A mark whose strong ink runs along this share of an image side is the edge of a page, a
#: table or a shadow there, like a mark touching three sides; so is one running along half
#: this share of both sides at a corner (a band of shading across it). A character cut by a
#: corner of the picture mostly runs along one side only.
_FRAME_ALONG = 0.3


def _sides(labels: np.ndarray, strong: np.ndarray):
    """(labels, strong) of the top, bottom, left and right edges of images (..., H, W)."""
    return [(labels[..., i, :], strong[..., i, :]) for i in (0, -1)] + [
        (labels[..., :, i], strong[..., :, i]) for i in (0, -1)]


def _edge_contact(labels: np.ndarray, strong: np.ndarray, count: int):
    """Per label 0..``count`` of images (..., H, W): whether it is framing (its strong ink
    touches three or four sides, runs along ``_FRAME_ALONG`` of one, or half that of both
    sides at a corner), and whether it touches no side at all."""
    top, bottom, left, right = (
        np.bincount(edge[solid], minlength=count + 1) / edge.shape[-1]
        for edge, solid in _sides(labels, strong))
    sides = (top > 0).astype(np.intp) + (bottom > 0) + (left > 0) + (right > 0)
    # any top or bottom share with any left or right one: two sides meeting at a corner
    corner = np.minimum(np.maximum(top, bottom), np.maximum(left, right))
    framing = ((sides >= 3) | (np.maximum.reduce([top, bottom, left, right]) >= _FRAME_ALONG)
               | (corner >= _FRAME_ALONG / 2))
    framing[0], free = False, sides == 0
    free[0] = False
    return framing, free


def _frames(labels: np.ndarray, n: int, strong: np.ndarray) -> np.ndarray:
    """Components (bool per label, 0..n) that are the frame of a photographed page.

    A table, shadow or page edge around the writing leaves a band whose strong ink touches
    three or four image sides or runs along one (faint shading that merely reaches the
    sides does not make a frame of the character it joins). It only counts as a frame
    when some other ink touches no side: a tightly cropped character may touch every side,
    and then it is all there is.
    """
    frame, free = _edge_contact(labels, strong, n)
    if not frame.any() or not free.any():
        return np.zeros(n + 1, bool)
    return frame


def _stack_frames(labels: np.ndarray, owner: np.ndarray, strong: np.ndarray) -> np.ndarray:
    """``_frames`` of every image of a stack (N, H, W) at once: bool per label 0..L, where
    labels 1..L belong to images ``owner`` (L,)."""
    frame, free = _edge_contact(labels, strong, len(owner))
    n = len(labels)
    framed = (np.bincount(owner[frame[1:]], minlength=n) > 0) & (
        np.bincount(owner[free[1:]], minlength=n) > 0)
    frame[1:] &= framed[owner]
    return frame


#: A mark spanning this share of the image both ways, with strong ink on less than
#: ``_OUTLINE_FILL`` of its box, is the outline of a sheet lying on a table (its edge,
#: sharpened by the camera or JPEG) rather than writing.
_OUTLINE_SPAN = 0.5
_OUTLINE_FILL = 0.03


def _outlines(boxes: np.ndarray, strong_area: np.ndarray, h: int, w: int) -> np.ndarray:
    """Marks (bool per label 0..L, whose ``boxes`` (L + 1, 4) are ``(x, y, w, h)``) of
    images (H = ``h``, W = ``w``) that look like a sheet's outline; marks without strong ink
    never do (they are dropped whatever their shape)."""
    wide, tall = boxes[:, 2], boxes[:, 3]
    return ((tall >= _OUTLINE_SPAN * h) & (wide >= _OUTLINE_SPAN * w) & (strong_area > 0)
            & (strong_area < _OUTLINE_FILL * tall * wide))


def _shading(labels: np.ndarray, x: np.ndarray, dark: float | np.ndarray, count: int) -> np.ndarray:
    """Marks (bool per label 0..``count`` of ``labels``, images (..., H, W)) that reach a
    side of their picture without a pixel of ``x`` at ``dark`` or above (``_SHADING`` of the
    ink level: a float, or (N, 1, 1) of a stack): the penumbra of a shadow reaching into
    the picture gets some of the writing's contrast, where every stroke gets all of it
    somewhere. Writing clear of the sides is never shading, however light: a digit in a
    paler pen stays, and a picture with no mark at a side needs no pixel compared."""
    shading = np.zeros(count + 1, bool)
    for edge, _ in _sides(labels, labels):
        shading[edge] = True
    shading[0] = False
    if shading.any():
        shading &= np.bincount(labels[x >= dark], minlength=count + 1) == 0
    return shading


def _drop(ink: np.ndarray, labels: np.ndarray, keep: np.ndarray) -> None:
    """Zero the ink and labels of every pixel whose mark ``keep`` (bool per label; label 0,
    paper, is never kept) drops.

    Usually every mark is kept and paper is all there is to drop: one comparison, far cheaper
    than looking up every pixel's mark. Otherwise ``take``, faster than fancy indexing."""
    dropped = labels == 0 if keep[1:].all() else ~np.take(keep, labels)
    ink[dropped] = 0.0
    labels[dropped] = 0


_NO_WRITING = "no ink found: the image has no visible writing"
_BLANK = "no ink found: the image looks blank or like noise"
_ONLY_SPECKS = "no ink found: only specks"


@dataclass(frozen=True)
class InkMarks:
    """An ink map and its marks, as ``ink_marks`` finds them."""

    #: (H, W) float32 in [0, 1]: ink = 1, paper and specks = 0
    ink: np.ndarray
    #: (H, W) int32: the mark (8-connected component of ink) of each pixel, 0 on paper;
    #: numbered in raster order of their first pixel, with gaps where specks were dropped
    labels: np.ndarray
    #: how many marks there are
    count: int
    #: (L + 1, 4) int32: the box ``(x, y, w, h)`` of each label's mark, in pixels; all 0 for
    #: label 0 and for dropped specks
    boxes: np.ndarray


#: A mark spanning this share of the picture's width or height, written with a pen at
#: least ``_MIN_HALF_WIDTH`` pixels wide each side of its middle, may have lines drawn
#: across it (crossing out, a noisy test picture, a ruler's edge): lines ``_THIN_RATIO``
#: times thinner than the writing that run across this share of the picture are erased.
_CROSSING_SPAN = 0.4
_MIN_HALF_WIDTH = 3.0
_THIN_RATIO = 2.5
#: Strokes at most this share of a mark's longer side wide each side of their middle.
_BLOT_WIDTH = 0.075
#: The writing's half-width: the distance to the paper that this share of its pixels lie
#: within.
_WIDTH_QUANTILE = 0.95
#: Widths are measured on ink this dark (of the ink level) or darker, without the faint blur
#: around strokes (which would widen thin lines) but with a faded stroke.
_SOLID = 0.25
#: What the lines cut off is kept when it holds a stroke at least this share of the
#: writing's half-width.
_THICK = 2.0 / 3.0
#: Boxes of marks examined for crossing lines, at most this many times the picture's pixels
#: (largest marks first): dozens of nested rings must not cost dozens of pictures' work.
_CROSSING_WORK = 2.0


def _crossing_lines(mark: np.ndarray, solid: np.ndarray, h: int, w: int
                    ) -> np.ndarray | None:
    """The pixels (bool like ``mark``) of ``mark`` (a box (H', W') bool around one mark of a
    picture ``h`` x ``w``) on thin lines drawn across it, and on what they cut off from
    the writing; None when it has none. Widths are those of its ``solid`` ink (``_SOLID``).

    A pixel within the writing's half-width of a stroke's middle belongs to that stroke, so
    a line's pixels beside a thick stroke do, and lines crossing it leave it whole. A mark
    whose strokes are not far thinner than it is large is a blot, not writing, and is left
    alone."""
    dist = imageops.distance(solid)
    half = _quantiles(dist[solid], _WIDTH_QUANTILE)[0] if solid.any() else 0.0
    if not _MIN_HALF_WIDTH <= half <= _BLOT_WIDTH * max(mark.shape):
        return None
    # Pixels of strokes at least 1 / _THIN_RATIO of the writing's width, and those within
    # its half-width of one (a distance transform: its cost does not grow with the width).
    stroke = imageops.distance(dist < half / _THIN_RATIO, beyond=True) <= half
    thin = mark & ~stroke
    _, _, boxes = imageops.label(thin)
    if not ((boxes[1:, 2] >= _CROSSING_SPAN * w) | (boxes[1:, 3] >= _CROSSING_SPAN * h)).any():
        return None
    # One line across makes the others lines too, however short the writing cut them.
    # What is left of the writing without them: its pieces holding a thick stroke.
    rest, n, _ = imageops.label(mark & ~thin)
    holds = np.bincount(rest[dist >= _THICK * half], minlength=n + 1) > 0
    holds[0] = False
    return mark & ~np.take(holds, rest)


#: Weak ink is kept within this many half-widths of the strong ink's strokes, on images
#: with a shorter side of this many pixels or more (photos of a page).
_WEAK_REACH = 4.0
_HELD_SIDE = 2 * _BACKGROUND_SIDE


def _reach_steps(reach: np.ndarray) -> np.ndarray:
    """``reach`` (pixels, float) rounded up to whole powers of 1.25, themselves rounded up
    (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, ...): however many marks a picture has, their reaches
    take a few values."""
    steps = np.ceil(np.log(np.maximum(reach, 1.0)) / np.log(1.25))
    return np.ceil(1.25 ** steps).astype(np.int64)


def _held(marks: InkMarks, strong: np.ndarray) -> InkMarks:
    """``marks`` (of one picture) without their weak ink farther than ``_WEAK_REACH`` of
    its mark's stroke half-widths from the ``strong`` ink (H, W) bool they hold, on
    pictures of ``_HELD_SIDE`` or more; relabelled when any went, and what is left too
    small to be a mark (by the rules ``ink_marks`` keeps marks by) goes too, unless
    nothing would be left.

    Weak ink is the faint edges and ends of strokes; paper grain in a shadow, or the glow a
    lens puts around dark strokes, passes the weak level too, and can join one character
    to the next into one mark.
    """
    h, w = marks.ink.shape
    if min(h, w) < _HELD_SIDE or not marks.count:
        return marks
    # Only the marks' part of the picture, and a pixel of paper around it: the erosion below
    # would count the part's edge as more ink.
    boxes = marks.boxes[marks.boxes[:, 2] > 0]
    left, top = (boxes[:, :2].min(axis=0) - 1).clip(0).tolist()
    right, bottom = (boxes[:, :2] + boxes[:, 2:] + 1).max(axis=0).tolist()
    part = (slice(top, min(bottom, h)), slice(left, min(right, w)))
    own = marks.labels[part]
    inked = own > 0
    held = inked & strong[part]
    solid = held.view(np.uint8)
    # A stroke of half-width r and length L covers 2 r L pixels, L of them on each side:
    # each mark's half-width, so that a blot's does not set the reach of thin writing.
    areas = np.bincount(own[held], minlength=len(marks.boxes))
    edges = np.bincount(own[solid > imageops.erode(solid, 3)], minlength=len(marks.boxes))
    reach = _reach_steps(_WEAK_REACH * areas / np.maximum(edges, 1) + 1.0)
    near = np.zeros_like(held)
    for step in np.unique(reach[areas > 0]):  # a few steps: one dilation each
        # within a square's reach (a little farther along the diagonals)
        seeds = (held & (reach[own] == step)).view(np.uint8)
        near |= imageops.dilate(seeds, 2 * int(step) + 1) > 0
    far = inked & ~near
    if not far.any():
        return marks
    ink = marks.ink.copy()
    ink[part][far] = 0.0
    labels, n, boxes = imageops.label(ink > 0)
    strong_area = np.bincount(labels[part][held], minlength=n + 1)
    strong_area[0] = 0
    keep = strong_area >= _min_mark_area(h * w, strong_area.max())
    if not keep.any():  # writing in specks: left as ink_marks found it
        return marks
    if not keep[1:].all():
        _drop(ink, labels, keep)
        boxes[~keep] = 0
    return InkMarks(ink, labels, int(np.count_nonzero(keep)), boxes)


def _uncrossed(marks: InkMarks) -> InkMarks:
    """``marks`` (of one picture) without the ``_crossing_lines`` of its marks that span
    ``_CROSSING_SPAN`` of the picture (the largest first, within ``_CROSSING_WORK``),
    relabelled when any were erased."""
    h, w = marks.ink.shape
    if min(h, w) < _LOCAL_BACKGROUND_SIDE:
        return marks
    spans = marks.boxes
    spanning = np.flatnonzero((spans[:, 2] >= _CROSSING_SPAN * w)
                              | (spans[:, 3] >= _CROSSING_SPAN * h))
    areas = spans[spanning, 2].astype(np.int64) * spans[spanning, 3]
    order = np.argsort(-areas, kind="stable")
    examined = spanning[order][np.cumsum(areas[order]) <= _CROSSING_WORK * h * w]
    ink = marks.ink
    for k in examined:
        x, y, bw, bh = spans[k].tolist()
        mark = marks.labels[y : y + bh, x : x + bw] == k
        lines = _crossing_lines(mark, mark & (ink[y : y + bh, x : x + bw] >= _SOLID), h, w)
        if lines is not None:
            if ink is marks.ink:
                ink = ink.copy()
            ink[y : y + bh, x : x + bw][lines] = 0.0
    if ink is marks.ink:
        return marks
    labels, count, boxes = imageops.label(ink > 0)
    return InkMarks(ink, labels, count, boxes)


def ink_from_gray(gray: np.ndarray, *, min_contrast: float = MIN_CONTRAST) -> np.ndarray:
    """Ink map (H, W) float32 in [0, 1] of a grayscale image (H, W; levels in [0, 1]): ink =
    1, paper and specks = 0.

    Polarity comes from the image: the median is paper (ink covers far less than half of a
    page), and ink is whichever extreme lies farther from it (on paper shaded over the whole
    range, whichever stands out from its neighbourhood). Raises ``NoInkError`` for blank
    pages, noise and low-contrast photos.
    """
    return ink_marks(gray, min_contrast=min_contrast).ink


def _dark_ink(levels: Sequence[Any]) -> Any:
    """Whether an image's ink is darker than its paper, from its grey levels at
    ``_LEVEL_QUANTILES`` (darkest, an eighth, a quarter, median, three quarters, seven
    eighths, lightest): each a float (a bool back), or float64 arrays (N,) of a stack (bool
    (N,) back), with the same result for each image.

    The median is paper (ink covers far less than half of a page) and ink is whichever
    extreme lies farther from it. Not when over a quarter of the pixels lie past half-way
    to that extreme and under an eighth past half-way to the other, which has half its
    contrast or more: the lit part of a page beside a hand's shadow is paper, and the
    writing is the other extreme.
    """
    low, _, quarter, paper, three_quarters, seven_eighths, high = levels
    # ``x ^ True`` negates a bool and a bool array alike.
    light = high - paper > paper - low
    light_half, dark_half = (paper + high) / 2, (paper + low) / 2
    to_dark = _lit_beside_shade(levels, three_quarters)
    to_light = (light ^ True) & (quarter < dark_half) & (seven_eighths <= light_half) & (
        high - paper >= (paper - low) / 2)
    return ((light ^ True) | to_dark) & (to_light ^ True)


def _lit_beside_shade(levels: Sequence[Any], lit: Any) -> Any:
    """Whether the light extreme lies farther from the paper (the median) than the dark one,
    the level ``lit`` (one of ``levels``, as ``_dark_ink`` takes them) lies past half-way to
    it, under an eighth of the pixels lies past half-way to the dark one, and the dark one
    has half the light one's contrast or more: the lit part of a page beside a shadow."""
    low, eighth, _, paper, _, _, high = levels
    return (high - paper > paper - low) & (lit > (paper + high) / 2) & (
        eighth >= (paper + low) / 2) & (paper - low >= (high - paper) / 2)


def _two_sided(levels: Sequence[Any]) -> Any:
    """Whether an eighth of the pixels lies past half-way to each extreme, and each extreme
    has half the other's contrast or more (levels as ``_dark_ink`` takes them): paper shaded
    from dark to light across the picture, whose levels cannot tell which extreme is ink.
    A lit page on a dark desk is not: its light side has little contrast to offer."""
    low, eighth, _, paper, _, seven_eighths, high = levels
    dark, light = paper - low, high - paper
    return ((eighth < (paper + low) / 2) & (seven_eighths > (paper + high) / 2)
            & (dark >= light / 2) & (light >= dark / 2))


def _mostly_shaded(levels: Sequence[Any]) -> bool:
    """Whether the light extreme lies farther from the paper (the median) than the dark one
    and an eighth to a quarter of the pixels lie past half-way to it, under an eighth past
    half-way to the dark one, which has half its contrast or more (levels as ``_dark_ink``
    takes them): a hand's shadow over all but a corner of a page, the lit corner paper and
    the writing dark, or a light character filling a grey picture with a little black at a
    side, the character the ink. The levels cannot tell them apart."""
    three_quarters, seven_eighths = levels[4], levels[5]
    return bool(_lit_beside_shade(levels, seven_eighths)
                and not _lit_beside_shade(levels, three_quarters))


#: Share of the pixels at each end of their difference from the neighbourhood's median that
#: ``_dark_locally`` compares: writing covers more than this, a page's noise is less.
_STANDOUT = 0.005


def _dark_locally(gray: np.ndarray) -> bool:
    """Whether the pixels of ``gray`` (H, W) that stand out darkest from their neighbourhood
    stand out farther than the lightest ones.

    The neighbourhood is a square a third of the shorter side (on a copy reduced to about
    ``_BACKGROUND_SIDE`` pixels): its median is the paper there, however the paper is
    shaded, since writing covers less than half of it, and a stroke stands out of it on the
    ink's side only."""
    small, _ = _reduced(gray)
    residual = small - imageops.median(small, 2 * (min(small.shape) // 6) + 1)
    darkest, lightest = _quantiles(residual, _STANDOUT, 1.0 - _STANDOUT)
    return -darkest > lightest


def _dark_ink_of(gray: np.ndarray, levels: Sequence[float]) -> bool:
    """``_dark_ink`` of one image (H, W) with its ``levels``; when they are two-sided or
    mostly shaded on an image large enough for a local paper level, the neighbourhoods
    decide (``_dark_locally``)."""
    if min(gray.shape) >= _LOCAL_BACKGROUND_SIDE and (
            _two_sided(levels) or _mostly_shaded(levels)):
        return _dark_locally(gray)
    return bool(_dark_ink(levels))


def ink_marks(gray: np.ndarray, *, min_contrast: float = MIN_CONTRAST) -> InkMarks:
    """``ink_from_gray`` with the marks it found on the way, so that segmentation need not
    label the ink again (``segment.segment_ink(marks)``)."""
    gray = np.asarray(gray, dtype=np.float32)
    flat = _sample(gray.ravel())
    ks = [_rank(q, flat.size) for q in _LEVEL_QUANTILES]
    k_mid = ks[_MEDIAN]
    # The median of 1 - gray is 1 - gray's order statistic mirrored around the middle:
    # one partition serves both polarities.
    k_mirror = flat.size - 1 - k_mid
    part = np.partition(flat, [*ks, k_mirror])
    if not _dark_ink_of(gray, part[ks].tolist()):
        x = _writing(gray, part[k_mid], dark_ink=False)
    else:
        x = _writing(1.0 - gray, np.float32(1.0) - part[k_mirror], dark_ink=True)

    top = float(x.max())
    if top < min_contrast:
        raise NoInkError(_NO_WRITING)
    otsu = _otsu(x[x > 0], top)
    # Robust noise level (MAD) of the paper class, floored so clean synthetic images work.
    paper_values = x[x <= otsu]
    sigma = max(_MAD_TO_SIGMA * _magnitude_median(paper_values), _MIN_SIGMA)
    strong = x > max(otsu, _STRONG_SIGMAS * sigma)
    ink_level = _quantiles(x[strong], _INK_QUANTILE)[0] if strong.any() else 0.0
    if ink_level < min_contrast or ink_level < _INK_SIGMAS * sigma:
        raise NoInkError(_BLANK)

    weak = x > max(_WEAK_SIGMAS * sigma, _WEAK_FLOOR)
    labels, n, boxes = imageops.label(weak)
    strong_area = np.bincount(labels[strong], minlength=n + 1)
    strong_area[0] = 0
    floor = _mark_floor(gray.size)
    if n > 1:  # a frame or outline counts only beside other ink
        strong_area[_frames(labels, n, strong)] = 0
        outline = _outlines(boxes, strong_area, *gray.shape)
        if outline.any() and (strong_area[~outline] >= floor).any():  # only beside writing
            strong_area[outline] = 0
        shading = _shading(labels, x, _SHADING * ink_level, n)
        if (strong_area[~shading] >= floor).any():  # only beside writing
            strong_area[shading] = 0
    keep = strong_area >= _min_mark_area(gray.size, strong_area.max())
    if not keep.any():
        raise NoInkError(_ONLY_SPECKS)
    ink = x * np.float32(1.0 / ink_level)
    np.minimum(ink, 1.0, out=ink)
    _drop(ink, labels, keep)
    boxes[~keep] = 0
    return _uncrossed(_held(InkMarks(ink, labels, int(np.count_nonzero(keep)), boxes), strong))


def ink_marks_many(
    grays: Sequence[np.ndarray], *, min_contrast: float = MIN_CONTRAST
) -> list[InkMarks | NoInkError]:
    """``ink_marks`` of each grayscale image (H, W), or in its place the ``NoInkError`` it
    raises.

    Images of one shape are analysed together, as one stack: a few dozen numpy calls for
    all of them instead of for each (64 uploads of 28x28: under a third of the time). Every
    result is bit for bit that of the image alone (``_stack_marks`` does what ``ink_marks``
    does, vectorised over the stack; a lone image goes through ``ink_marks`` itself).
    A stack holds at most ``STACK_PIXELS`` pixels, so memory stays bounded however many
    images there are.
    """
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for index, gray in enumerate(grays):
        if np.ndim(gray) != 2:
            raise ValueError(f"expected a grayscale image (H, W), got shape {np.shape(gray)}")
        by_shape.setdefault(np.shape(gray), []).append(index)
    outcomes: dict[int, InkMarks | NoInkError] = {}
    for (h, w), same_size in by_shape.items():
        per_stack = max(1, STACK_PIXELS // max(1, h * w))
        for first in range(0, len(same_size), per_stack):
            group = same_size[first : first + per_stack]
            if len(group) > 1:
                stack = np.stack([grays[i] for i in group], dtype=np.float32)
                outcomes.update(zip(group, _stack_marks(stack, min_contrast), strict=True))
                continue
            try:
                outcomes[group[0]] = ink_marks(grays[group[0]], min_contrast=min_contrast)
            except NoInkError as exc:
                outcomes[group[0]] = exc
    return [outcomes[i] for i in range(len(grays))]


def _stack_keep(labels: np.ndarray, boxes: np.ndarray, counts: np.ndarray, strong: np.ndarray,
                x: np.ndarray, dark: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Which marks of a stack (labels, boxes and counts as ``_label`` gives them; strong
    ink and writing ``x`` (N, H, W); each image's ``_SHADING`` level ``dark`` (N, 1, 1))
    ``ink_marks`` would keep: bool per label 0..L, each image's first label less one (N,),
    marks kept per image."""
    n, h, w = labels.shape
    # Labels run in raster order through the stack: image i has firsts[i] + 1 .. ends[i].
    firsts = (np.cumsum(counts) - counts).astype(labels.dtype)
    owner = np.repeat(np.arange(n), counts)
    strong_area = np.bincount(labels.reshape(n, -1)[strong.reshape(n, -1)],
                              minlength=len(owner) + 1)
    strong_area[0] = 0
    strong_area[_stack_frames(labels, owner, strong)] = 0
    floor = _mark_floor(h * w)
    # outlines, then shading, go only beside writing (another mark of their image that has
    # the floor's strong ink), as in ink_marks
    for dropped in (_outlines(boxes, strong_area, h, w)[1:],
                    _shading(labels, x, dark, len(owner))[1:]):
        beside = np.bincount(owner[(strong_area[1:] >= floor) & ~dropped], minlength=n) > 0
        strong_area[1:][dropped & beside[owner]] = 0
    largest = np.zeros(n, strong_area.dtype)
    np.maximum.at(largest, owner, strong_area[1:])
    keep = np.concatenate(([False], strong_area[1:] >= _min_mark_area(h * w, largest)[owner]))
    kept = np.bincount(owner[keep[1:]], minlength=n).tolist()
    return keep, firsts, kept


def _own_boxes(boxes: np.ndarray, first: int, count: int) -> np.ndarray:
    """The rows of a stack's ``boxes`` for the image whose labels are ``first`` + 1 ..
    ``first`` + ``count``, numbered as ``InkMarks`` numbers them (from 1; row 0 all 0)."""
    own = boxes[first : first + count + 1].copy()
    own[0] = 0
    return own


def _stack_marks(gray: np.ndarray, min_contrast: float) -> list[InkMarks | NoInkError]:
    """``ink_marks`` of every image of a stack (N, H, W) float32."""
    n, h, w = gray.shape
    sample = _sample(gray.reshape(n, -1))
    size = sample.shape[1]
    ks = [_rank(q, size) for q in _LEVEL_QUANTILES]
    k_mid = ks[_MEDIAN]
    k_mirror = size - 1 - k_mid  # as in ink_marks
    part = np.partition(sample, [*ks, k_mirror], axis=1)
    levels = part[:, ks].astype(np.float64)
    if min(h, w) < _LOCAL_BACKGROUND_SIDE:
        dark_ink = _dark_ink(levels.T)
    else:  # a few images only (STACK_PIXELS): each its own _dark_ink_of
        dark_ink = np.array([_dark_ink_of(g, lv) for g, lv in zip(gray, levels.tolist(),
                                                                  strict=True)])
    x = gray.copy()
    np.subtract(np.float32(1.0), x, out=x, where=dark_ink[:, None, None])
    # each image's median (in the dark-ink case, of 1 - gray): its paper level when small
    level = np.where(dark_ink, np.float32(1.0) - part[:, k_mirror], part[:, k_mid])
    if min(h, w) < _LOCAL_BACKGROUND_SIDE:
        x -= level[:, None, None]
    else:
        for image, median, dark in zip(x, level, dark_ink, strict=True):
            image[...] = _writing(image, median, bool(dark))

    flat = x.reshape(n, -1)
    top = flat.max(axis=1).astype(np.float64)
    no_ink = top < min_contrast
    otsu = _row_otsu(flat, np.where(no_ink, 1.0, top))
    # Thresholds are float32, as ink_marks compares them with float32 pixels (a Python
    # float meets an array in the array's precision); float64 ones would round apart.
    paper_class = flat <= otsu.astype(np.float32)[:, None]
    sigma = np.maximum(_MAD_TO_SIGMA * _row_quantiles(np.abs(flat), paper_class, 0.5),
                       _MIN_SIGMA)
    strong = flat > np.maximum(otsu, _STRONG_SIGMAS * sigma).astype(np.float32)[:, None]
    ink_level = _row_quantiles(flat, strong, _INK_QUANTILE)
    blank = no_ink | (ink_level < min_contrast) | (ink_level < _INK_SIGMAS * sigma)

    weak = flat > np.maximum(_WEAK_SIGMAS * sigma, _WEAK_FLOOR).astype(np.float32)[:, None]
    weak &= ~blank[:, None]
    labels, boxes, counts = _label(weak.reshape(n, h, w))
    dark = (_SHADING * ink_level).astype(np.float32)[:, None, None]
    keep, firsts, kept = _stack_keep(labels, boxes, counts, strong.reshape(n, h, w), x, dark)

    ink = x * (1.0 / np.where(blank, 1.0, ink_level)).astype(np.float32)[:, None, None]
    np.minimum(ink, 1.0, out=ink)
    _drop(ink, labels, keep)
    np.subtract(labels, firsts[:, None, None], out=labels, where=labels > 0)
    boxes[~keep] = 0
    strong = strong.reshape(n, h, w)
    return [
        _uncrossed(_held(InkMarks(ink[i], labels[i], kept[i],
                                  _own_boxes(boxes, firsts[i], counts[i])), strong[i]))
        if kept[i]
        else NoInkError(_NO_WRITING if no_ink[i] else _BLANK if blank[i] else _ONLY_SPECKS)
        for i in range(n)
    ]
