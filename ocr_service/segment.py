"""Several characters in one ink map -> one crop per character, in reading order.

Connected components are merged when they belong to one character (a broken 5, the dot of an
i), components much wider than tall are split at column-projection minima (touching
characters), and the result is ordered left to right within lines, lines top to bottom.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from itertools import pairwise

import numpy as np

from . import imageops
from .image_errors import TooManyCharactersError
from .ink import InkMarks
from .options import DEFAULT_SEGMENT, SEGMENT_MODES

__all__ = ["Segment", "segment_ink"]

#: Cost limits: merging is quadratic in the number of ink components, and every character
#: is normalised and classified, so a small upload of many dots must not stall a worker.
MAX_COMPONENTS = 512
MAX_CHARACTERS = 128
# Characters wider than this times their line's character height may be several touching
# characters (a narrow 1 touching an 8 is no wider than one 0).
WIDE = 0.7
#: A band of writing taller than this many character heights holds several rows: one
#: character set off by a whole character height from its neighbours still reads as a row.
TALL_BAND = 2.5


@dataclass(frozen=True)
class Segment:
    """One character: its ink (zero outside its own strokes), box and line number."""

    ink: np.ndarray  # (h, w) float32, ink = 1
    box: tuple[int, int, int, int]  # (x, y, w, h) in ink-map pixels
    line: int
    #: the larger of its own height and its line's typical character height (px): a flat
    #: character (a wide, low 2) is measured against its neighbours, not against itself
    ref_height: int
    #: whether it is wide enough to be several touching characters
    wide: bool = False
    #: full-size characters in its line, specks and bits not counted (1: no neighbours to
    #: measure it against)
    line_size: int = 1

    @cached_property
    def splits(self) -> tuple[tuple[Segment, ...], ...]:
        """Alternative readings of a wide segment as several characters (empty when it is
        not wide); computed on first use, as the predictor only asks when a split could win.
        """
        if not self.wide:
            return ()
        return _splits(self.ink, self.box[0], self.box[1], self.line, self.ref_height)


@dataclass
class _Group:
    y0: int
    y1: int
    x0: int
    x1: int
    labels: list[int]

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    def absorb(self, other: _Group) -> None:
        self.y0, self.y1 = min(self.y0, other.y0), max(self.y1, other.y1)
        self.x0, self.x1 = min(self.x0, other.x0), max(self.x1, other.x1)
        self.labels += other.labels


def _overlapping(a: _Group, b: _Group) -> bool:
    """Stacked parts of one character (a 5's bar, an i's dot): shared columns, a small
    vertical gap, and mostly one above the other rather than side by side."""
    overlap = min(a.x1, b.x1) - max(a.x0, b.x0)
    if overlap < 0.5 * min(a.width, b.width):
        return False
    gap = max(a.y0, b.y0) - min(a.y1, b.y1)
    small, large = sorted((a, b), key=lambda g: g.height)
    if small.height < 0.5 * large.height and -gap * overlap >= 0.8 * small.width * small.height:
        return True  # a small piece inside the other's box: a loose bit of a loop or stroke
    return -0.5 * min(a.height, b.height) <= gap <= 0.3 * max(a.height, b.height)


def _adjacent(a: _Group, b: _Group, height: float) -> bool:
    """Side-by-side parts of one broken character (``height``: the typical character's).

    Separate characters leave a visible gap; the pieces of a broken stroke nearly touch.
    A small fragment (a loose bar, a stroke end) may sit farther away.
    """
    rows = min(a.y1, b.y1) - max(a.y0, b.y0)
    if rows < 0.3 * min(a.height, b.height):
        return False
    gap = max(a.x0, b.x0) - min(a.x1, b.x1)
    width = max(a.x1, b.x1) - min(a.x0, b.x0)
    tall = max(a.y1, b.y1) - min(a.y0, b.y0)
    if min(a.height, b.height) < 0.5 * height:
        return gap <= 0.25 * height and width <= 2.0 * tall
    # Two narrow characters this close are merged too; the predictor's recognition-checked
    # split separates them again.
    return gap <= 0.05 * height and width <= 1.2 * tall


def _merge(groups: list[_Group], same: Callable[[_Group, _Group], bool]) -> list[_Group]:
    merged = True
    while merged:
        merged = False
        for i, a in enumerate(groups):
            for j in range(i + 1, len(groups)):
                if same(a, groups[j]):
                    a.absorb(groups.pop(j))
                    merged = True
                    break
            if merged:
                break
    return groups


def _bands(groups: list[_Group]) -> list[list[_Group]]:
    """Groups whose row spans chain together by overlapping, top to bottom: rows of writing
    separated by bands of paper. A character sitting higher or lower than its neighbours
    (a wobbling baseline) still overlaps them, so its row stays one band."""
    bands: list[tuple[int, list[_Group]]] = []
    for g in sorted(groups, key=lambda g: g.y0):
        if bands and g.y0 < bands[-1][0]:
            bottom, members = bands[-1]
            members.append(g)
            bands[-1] = (max(bottom, g.y1), members)
        else:
            bands.append((g.y1, [g]))
    return [members for _, members in bands]


def _overlap_lines(groups: list[_Group]) -> list[list[_Group]]:
    """Group characters whose row spans overlap by at least half the smaller height."""
    lines: list[tuple[int, int, list[_Group]]] = []
    for g in sorted(groups, key=lambda g: (g.y0 + g.y1) / 2):
        for k, (y0, y1, members) in enumerate(lines):
            if min(y1, g.y1) - max(y0, g.y0) >= 0.5 * min(g.height, y1 - y0):
                members.append(g)
                lines[k] = (min(y0, g.y0), max(y1, g.y1), members)
                break
        else:
            lines.append((g.y0, g.y1, [g]))
    lines.sort(key=lambda line: (line[0] + line[1]) / 2)
    return [members for _, _, members in lines]


def _lines(groups: list[_Group]) -> list[list[_Group]]:
    """Characters in lines, top to bottom, each line left to right.

    A new line needs a band of paper across the page above it (``_bands``). Only a band
    taller than ``TALL_BAND`` character heights, where rows of writing touch (a descender
    reaching into the next row), is divided by how much its characters overlap.
    """
    lines = []
    for band in _bands(groups):
        top, bottom = min(g.y0 for g in band), max(g.y1 for g in band)
        tall = bottom - top > TALL_BAND * _typical_height(band)
        lines.extend(_overlap_lines(band) if tall else [band])
    return [sorted(members, key=lambda g: g.x0) for members in lines]


def _full_size(groups: list[_Group]) -> list[_Group]:
    """The groups at least half as tall as the tallest: characters, not specks or bits."""
    tallest = max(g.height for g in groups)
    return [g for g in groups if g.height >= 0.5 * tallest]


def _typical_height(groups: list[_Group]) -> float:
    """Median height of the full-size characters among ``groups``: fragments must not drag
    it down."""
    # statistics, not numpy: np.median's fixed cost dominates on a handful of values
    return float(statistics.median(g.height for g in _full_size(groups)))


def _cut_sets(ink: np.ndarray, ref_height: int) -> list[list[int]]:
    """Alternative sets of columns at which a wide piece of ink may be cut.

    Two characters: each of the three deepest minima of the column projection in the middle
    70% (a narrow 1 beside a wide 8 is cut far from the centre). More characters (wider than
    about 1.5 times ``ref_height``, its own height or its line's if taller: a long dash
    between digits is not a row of characters): one cut at the projection minimum near each
    equal division.
    """
    h, w = ink.shape
    profile = imageops.smooth1d(ink.sum(axis=0), max(1, h // 10))
    lo, hi = int(0.15 * w), int(0.85 * w) + 1
    inner = profile[lo:hi]
    is_min = np.r_[True, inner[1:] <= inner[:-1]] & np.r_[inner[:-1] <= inner[1:], True]
    minima = lo + np.flatnonzero(is_min)
    cut_sets: list[list[int]] = []
    for col in minima[np.argsort(profile[minima], kind="stable")]:
        if all(abs(col - c[0]) > 0.1 * w for c in cut_sets):
            cut_sets.append([int(col)])
        if len(cut_sets) == 3:
            break
    parts = round(w / (0.75 * ref_height))
    if parts > MAX_CHARACTERS:
        raise TooManyCharactersError(
            f"a {w}x{h} stroke would be {parts} characters; at most {MAX_CHARACTERS} are read"
        )
    if parts >= 3:
        cuts = []
        for k in range(1, parts):
            centre = k * w / parts
            a, b = int(centre - 0.25 * w / parts), int(centre + 0.25 * w / parts) + 1
            cuts.append(a + int(np.argmin(profile[a:b])))
        cut_sets.append(cuts)
    return cut_sets


def _crop(ink: np.ndarray, x0: int, y0: int, line: int) -> Segment | None:
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        return None
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    box = (x0 + int(cols[0]), y0 + int(rows[0]), int(crop.shape[1]), int(crop.shape[0]))
    return Segment(crop, box, line, ref_height=int(crop.shape[0]))


def _without_slivers(piece: np.ndarray) -> np.ndarray:
    """Drop small parts a cut leaves behind: tips of the neighbour's strokes."""
    labels, n, _ = imageops.label(piece > 0)
    if n < 2:
        return piece
    area = np.bincount(labels.ravel())
    area[0] = 0
    return np.where((area >= 0.15 * area.max())[labels], piece, 0.0)


def _splits(
    own: np.ndarray, x0: int, y0: int, line: int, ref_height: int
) -> tuple[tuple[Segment, ...], ...]:
    splits = []
    for cuts in _cut_sets(own, ref_height):
        bounds = [0, *cuts, own.shape[1]]
        pieces = [
            _crop(_without_slivers(own[:, a:b]), x0 + a, y0, line) for a, b in pairwise(bounds)
        ]
        if all(p is not None for p in pieces):
            splits.append(tuple(pieces))
    return tuple(splits)


def segment_ink(ink: np.ndarray | InkMarks, mode: str = DEFAULT_SEGMENT) -> list[Segment]:
    """Split an ink map (H, W) (ink > 0, paper = 0) into characters in reading order.

    ``single``: all ink is one character. ``multi`` and ``auto``: connected components,
    merged into characters; any character wider than ``WIDE`` times its ``ref_height`` and
    at least half that tall is marked ``wide`` and offers candidate splits
    (``Segment.splits``). Given ``InkMarks``, it uses the marks found with the ink map
    instead of labelling the ink again.
    """
    if mode not in SEGMENT_MODES:
        raise ValueError(f"unknown segment mode {mode!r} (expected one of {list(SEGMENT_MODES)})")
    ink_map = ink.ink if isinstance(ink, InkMarks) else ink
    if mode == "single":
        whole = _crop(ink_map, 0, 0, 0)
        return [whole] if whole is not None else []
    if isinstance(ink, InkMarks):
        labels, count, boxes = ink.labels, ink.count, ink.boxes
    else:
        labels, count, boxes = imageops.label(ink_map > 0)
    if count > MAX_COMPONENTS:
        raise TooManyCharactersError(
            f"the image has {count} separate ink marks; at most {MAX_COMPONENTS} are read"
        )
    groups = [
        _Group(y, y + h, x, x + w, [label])
        for label, (x, y, w, h) in enumerate(boxes.tolist())
        if w
    ]
    if not groups:
        return []
    if len(groups) == 1:  # one mark, as most uploads hold: its own line, nothing to merge
        return [_segment(groups[0], labels, ink_map, 0, groups[0].height, 1)]
    groups = _merge(groups, _overlapping)
    height = _typical_height(groups)
    groups = _merge(groups, lambda a, b: _adjacent(a, b, height))
    if len(groups) > MAX_CHARACTERS:
        raise TooManyCharactersError(
            f"the image holds {len(groups)} characters; at most {MAX_CHARACTERS} are read"
        )
    segments = []
    for line_no, line in enumerate(_lines(groups)):
        line_height = _typical_height(line)
        line_size = len(_full_size(line))
        segments += [_segment(g, labels, ink_map, line_no, line_height, line_size) for g in line]
    return segments


def _segment(g: _Group, labels: np.ndarray, ink_map: np.ndarray, line_no: int,
             line_height: float, line_size: int) -> Segment:
    """The segment of group ``g``: its own ink (of its labels only) in its box."""
    region = labels[g.y0 : g.y1, g.x0 : g.x1]
    mine = region == g.labels[0] if len(g.labels) == 1 else np.isin(region, g.labels)
    own = np.where(mine, ink_map[g.y0 : g.y1, g.x0 : g.x1], 0.0)
    ref = round(max(g.height, line_height))
    # Touching characters are as tall as their line: a long low stroke (a dash, an
    # underline) is one mark, not a row of characters.
    wide = g.width > WIDE * ref and 2 * g.height >= ref
    # A group's box is the union of its marks' boxes, and every labelled pixel has
    # ink: its ink touches all four sides already, with nothing to crop.
    box = (g.x0, g.y0, g.width, g.height)
    return Segment(own, box, line_no, ref, wide=wide, line_size=line_size)
