"""Grayscale image -> ink map and marks: where the writing is, stroke by stroke.

Polarity and paper level come from the image itself, Otsu's threshold and a robust noise
level separate ink from paper, and 8-connected marks too small to be writing (specks) or
framing a photographed page are dropped. ``ink_marks`` reads one image;
``ink_marks_many`` reads images of one size as one stack, with the same results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .image_errors import NoInkError

__all__ = ["STACK_PIXELS", "InkMarks", "ink_from_gray", "ink_marks", "ink_marks_many"]

#: Pixels in one stack of ``ink_marks_many`` at most: its arrays take about 40 bytes a
#: pixel at their peak (10 MB here). Stacking pays for small images, where each numpy
#: call's fixed cost is what counts: 334 uploads of 28x28 fit, three of 280x280.
STACK_PIXELS = 1 << 18


_BIN_CENTRES = np.arange(256) + 0.5


def _sample(values: np.ndarray) -> np.ndarray:
    """``values`` (..., S) with rows of over 2 * 65536 values subsampled to ~65k each,
    plenty for quantiles."""
    size = values.shape[-1]
    return values[..., :: size // 65536] if size > 2 * 65536 else values


def _rank(q: float, n: int) -> int:
    return min(int(q * n), n - 1)


def _quantiles(values: np.ndarray, *qs: float) -> list[float]:
    """Lower order statistics at fractions ``qs`` of an array (no interpolation).

    One ``np.partition`` call: ``np.percentile`` costs ~25 us each on a 28x28 upload.
    """
    flat = _sample(values.ravel())
    ks = [_rank(q, flat.size) for q in qs]
    part = np.partition(flat, ks)
    return [float(part[k]) for k in ks]


#: Images of up to this many pixels are small: per numpy call, the fixed cost outweighs the
#: work, so a stack of them is handled in whole-stack calls (one sort of every row in
#: ``_row_quantiles``, one labelling call in ``_label``); larger ones image by image.
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
_LOCAL_BACKGROUND_SIDE = 64


def _background(x: np.ndarray, median: np.float32) -> np.ndarray | np.float32:
    """Local paper level of ``x`` (ink high): its morphological opening.

    The opening (a minimum then a maximum over a square a fifth of the shorter side) takes
    away every stroke narrower than the square, and keeps what is wider: shadows, lighting
    gradients and the page edges of a photo, whose sharp borders it follows exactly, so
    that ``x`` minus it (the top-hat) leaves the writing alone. The paper's noise is
    smoothed first, or the opening would follow its dips. Small images get one global
    level, ``median`` (``x``'s, as ``_quantiles`` gives it).
    """
    h, w = x.shape
    if min(h, w) < _LOCAL_BACKGROUND_SIDE:
        return median
    size = 2 * max(8, min(h, w) // 6) + 1
    smooth = ndimage.uniform_filter(x, size=3, mode="nearest")
    low = ndimage.minimum_filter(smooth, size=size, mode="nearest")
    return ndimage.maximum_filter(low, size=size, mode="nearest")


_EIGHT = np.ones((3, 3), bool)  # 8-connectivity
#: 8-connectivity within each image of a stack (N, H, W), none between images
_STACK_EIGHT = np.zeros((3, 3, 3), bool)
_STACK_EIGHT[1] = _EIGHT


def _label(ink: np.ndarray) -> np.ndarray:
    """8-connected components (N, H, W) int32 of a stack of masks, numbered 1.. in raster
    order through the stack (each image's after the previous image's)."""
    h, w = ink.shape[1:]
    if h * w <= _SMALL_IMAGE:
        return ndimage.label(ink, structure=_STACK_EIGHT)[0]
    # A 3-D structure costs large images a third more than a 2-D one.
    labels = np.empty(ink.shape, np.int32)
    offset = 0
    for image, out in zip(ink, labels, strict=True):
        found = ndimage.label(image, structure=_EIGHT, output=out)
        if offset:
            np.add(out, offset, out=out, where=out > 0)
        offset += found
    return labels


def _frames(labels: np.ndarray, n: int, strong: np.ndarray) -> np.ndarray:
    """Components (bool per label, 0..n) that are the frame of a photographed page.

    A table or shadow around the paper leaves a band whose strong ink touches three or four
    image sides (faint shading that merely reaches the sides does not make a frame of the
    character it joins). It only counts as a frame when some other ink touches no side: a
    tightly cropped character may touch every side, and then it is all there is.
    """
    touched = np.zeros((4, n + 1), bool)
    for side, (edge, solid) in enumerate(_sides(labels, strong)):
        touched[side, edge[solid]] = True
    sides = touched.sum(axis=0)
    sides[0] = -1
    frame = sides >= 3
    if not frame.any() or not (sides == 0).any():
        return np.zeros(n + 1, bool)
    return frame


def _sides(labels: np.ndarray, strong: np.ndarray):
    """(labels, strong) of the top, bottom, left and right edges of images (..., H, W)."""
    return [(labels[..., i, :], strong[..., i, :]) for i in (0, -1)] + [
        (labels[..., :, i], strong[..., :, i]) for i in (0, -1)]


def _stack_frames(labels: np.ndarray, owner: np.ndarray, strong: np.ndarray) -> np.ndarray:
    """``_frames`` of every image of a stack (N, H, W) at once: bool per label 0..L, where
    labels 1..L belong to images ``owner`` (L,)."""
    touched = np.zeros((4, len(owner) + 1), bool)
    for side, (edge, solid) in enumerate(_sides(labels, strong)):
        touched[side, edge[solid]] = True
    sides = touched[:, 1:].sum(axis=0)
    frame, free = sides >= 3, sides == 0
    n = len(labels)
    framed = (np.bincount(owner[frame], minlength=n) > 0) & (
        np.bincount(owner[free], minlength=n) > 0)
    return np.concatenate(([False], frame & framed[owner]))


def _drop(ink: np.ndarray, labels: np.ndarray, keep: np.ndarray) -> None:
    """Zero the ink and labels of every pixel whose mark ``keep`` (bool per label; label 0,
    paper, is never kept) drops.

    Usually every mark is kept and paper is all there is to drop: one comparison (7 against
    230 us on a 280x280 canvas). Otherwise ``take``, a third of indexing's time."""
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


def ink_from_gray(gray: np.ndarray, *, min_contrast: float = 0.08) -> np.ndarray:
    """Ink map (H, W) float32 in [0, 1] of a grayscale image: ink = 1, paper and specks = 0.

    Polarity comes from the image: the median is paper (ink covers far less than half of a
    page), and ink is whichever extreme lies farther from it. Raises ``NoInkError`` for blank
    pages, noise and low-contrast photos.
    """
    return ink_marks(gray, min_contrast=min_contrast).ink


def ink_marks(gray: np.ndarray, *, min_contrast: float = 0.08) -> InkMarks:
    """``ink_from_gray`` with the marks it found on the way, so that segmentation need not
    label the ink again (``segment.segment_ink(marks)``)."""
    gray = np.asarray(gray, dtype=np.float32)
    flat = _sample(gray.ravel())
    k_low, k_mid, k_high = (_rank(q, flat.size) for q in (0.001, 0.5, 0.999))
    # The median of 1 - gray is 1 - gray's order statistic mirrored around the middle:
    # one partition serves both polarities.
    k_mirror = flat.size - 1 - k_mid
    part = np.partition(flat, [k_low, k_mid, k_high, k_mirror])
    low, paper, high = float(part[k_low]), float(part[k_mid]), float(part[k_high])
    if high - paper > paper - low:
        x = gray - _background(gray, part[k_mid])
    else:
        x = 1.0 - gray
        x -= _background(x, np.float32(1.0) - part[k_mirror])

    top = float(x.max())
    if top < min_contrast:
        raise NoInkError(_NO_WRITING)
    otsu = _otsu(x[x > 0], top)
    # Robust noise level (MAD) of the paper class, floored so clean synthetic images work.
    paper_values = x[x <= otsu]
    sigma = max(1.4826 * _quantiles(np.abs(paper_values), 0.5)[0], 0.004)
    strong = x > max(otsu, 4.0 * sigma)
    ink_level = _quantiles(x[strong], 0.75)[0] if strong.any() else 0.0
    if ink_level < min_contrast or ink_level < 8.0 * sigma:
        raise NoInkError(_BLANK)

    weak = x > max(4.0 * sigma, 0.02)
    labels, n = ndimage.label(weak, structure=_EIGHT)
    strong_area = np.bincount(labels[strong], minlength=n + 1)
    strong_area[0] = 0
    strong_area[_frames(labels, n, strong)] = 0
    min_area = max(3.0, 1e-4 * gray.size, 0.04 * strong_area.max())
    keep = strong_area >= min_area
    if not keep.any():
        raise NoInkError(_ONLY_SPECKS)
    ink = x * np.float32(1.0 / ink_level)
    np.minimum(ink, 1.0, out=ink)
    _drop(ink, labels, keep)
    return InkMarks(ink, labels, int(np.count_nonzero(keep)))


def ink_marks_many(
    grays: Sequence[np.ndarray], *, min_contrast: float = 0.08
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


def _stack_marks(gray: np.ndarray, min_contrast: float) -> list[InkMarks | NoInkError]:
    """``ink_marks`` of every image of a stack (N, H, W) float32."""
    n, h, w = gray.shape
    sample = _sample(gray.reshape(n, -1))
    size = sample.shape[1]
    k_low, k_mid, k_high = (_rank(q, size) for q in (0.001, 0.5, 0.999))
    k_mirror = size - 1 - k_mid  # as in ink_marks
    part = np.partition(sample, [k_low, k_mid, k_high, k_mirror], axis=1)
    low, paper, high = part[:, [k_low, k_mid, k_high]].T.astype(np.float64)
    dark_ink = ~(high - paper > paper - low)
    x = gray.copy()
    np.subtract(np.float32(1.0), x, out=x, where=dark_ink[:, None, None])
    # each image's median (in the dark-ink case, of 1 - gray): its paper level when small
    level = np.where(dark_ink, np.float32(1.0) - part[:, k_mirror], part[:, k_mid])
    if min(h, w) < _LOCAL_BACKGROUND_SIDE:
        x -= level[:, None, None]
    else:
        for image, median in zip(x, level, strict=True):
            image -= _background(image, median)

    flat = x.reshape(n, -1)
    top = flat.max(axis=1).astype(np.float64)
    no_ink = top < min_contrast
    otsu = _row_otsu(flat, np.where(no_ink, 1.0, top))
    # Thresholds are float32, as ink_marks compares them with float32 pixels (a Python
    # float meets an array in the array's precision); float64 ones would round apart.
    paper_class = flat <= otsu.astype(np.float32)[:, None]
    sigma = np.maximum(1.4826 * _row_quantiles(np.abs(flat), paper_class, 0.5), 0.004)
    strong = flat > np.maximum(otsu, 4.0 * sigma).astype(np.float32)[:, None]
    ink_level = _row_quantiles(flat, strong, 0.75)
    blank = no_ink | (ink_level < min_contrast) | (ink_level < 8.0 * sigma)

    weak = flat > np.maximum(4.0 * sigma, 0.02).astype(np.float32)[:, None]
    weak &= ~blank[:, None]
    labels = _label(weak.reshape(n, h, w))
    # Labels run in raster order through the stack: image i has firsts[i] + 1 .. ends[i].
    ends = np.maximum.accumulate(labels.reshape(n, -1).max(axis=1))
    firsts = np.concatenate(([0], ends[:-1])).astype(labels.dtype)
    owner = np.repeat(np.arange(n), ends - firsts)
    strong_area = np.bincount(labels.reshape(n, -1)[strong], minlength=len(owner) + 1)
    strong_area[0] = 0
    strong_area[_stack_frames(labels, owner, strong.reshape(n, h, w))] = 0
    largest = np.zeros(n, strong_area.dtype)
    np.maximum.at(largest, owner, strong_area[1:])
    min_area = np.maximum(max(3.0, 1e-4 * (h * w)), 0.04 * largest)  # as ink_marks rounds it
    keep = np.concatenate(([False], strong_area[1:] >= min_area[owner]))
    kept = np.bincount(owner[keep[1:]], minlength=n).tolist()

    ink = x * (1.0 / np.where(blank, 1.0, ink_level)).astype(np.float32)[:, None, None]
    np.minimum(ink, 1.0, out=ink)
    _drop(ink, labels, keep)
    np.subtract(labels, firsts[:, None, None], out=labels, where=labels > 0)
    return [
        InkMarks(ink[i], labels[i], kept[i]) if kept[i]
        else NoInkError(_NO_WRITING if no_ink[i] else _BLANK if blank[i] else _ONLY_SPECKS)
        for i in range(n)
    ]
