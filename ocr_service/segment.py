"""Several characters in one ink map -> one crop per character, in reading order.

Connected components are merged when they belong to one character (a broken 5, the dot of an
i), components much wider than tall are split at column-projection minima (touching
characters), and the result is ordered left to right within lines, lines top to bottom.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
from scipy import ndimage

__all__ = ["MODES", "Segment", "segment_ink"]

MODES = ("auto", "single", "multi")
_EIGHT = np.ones((3, 3), bool)


@dataclass(frozen=True)
class Segment:
    """One character: its ink (zero outside its own strokes), box and line number."""

    ink: np.ndarray  # (h, w) float32, ink = 1
    box: tuple[int, int, int, int]  # (x, y, w, h) in ink-map pixels
    line: int


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


def _same_character(a: _Group, b: _Group) -> bool:
    """Parts of one character overlap in columns and are close vertically."""
    overlap = min(a.x1, b.x1) - max(a.x0, b.x0)
    if overlap < 0.5 * min(a.width, b.width):
        return False
    gap = max(a.y0, b.y0) - min(a.y1, b.y1)
    return gap <= 0.3 * max(a.height, b.height)


def _merge(groups: list[_Group]) -> list[_Group]:
    merged = True
    while merged:
        merged = False
        for i, a in enumerate(groups):
            for j in range(i + 1, len(groups)):
                if _same_character(a, groups[j]):
                    a.absorb(groups.pop(j))
                    merged = True
                    break
            if merged:
                break
    return groups


def _lines(groups: list[_Group]) -> list[list[_Group]]:
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
    return [sorted(members, key=lambda g: g.x0) for _, _, members in lines]


def _cuts(ink: np.ndarray, max_aspect: float) -> list[int]:
    """Column indices where a too-wide piece of ink is split, at projection minima."""
    h, w = ink.shape
    if w <= max_aspect * h:
        return []
    parts = max(2, round(w / (0.8 * h)))
    profile = ndimage.uniform_filter1d(ink.sum(axis=0), size=max(1, h // 10))
    cuts = []
    for k in range(1, parts):
        centre = k * w / parts
        lo, hi = int(centre - 0.2 * w / parts), int(centre + 0.2 * w / parts) + 1
        cuts.append(lo + int(np.argmin(profile[lo:hi])))
    return cuts


def _crop(ink: np.ndarray, x0: int, y0: int, line: int) -> Segment | None:
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        return None
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    box = (x0 + int(cols[0]), y0 + int(rows[0]), int(crop.shape[1]), int(crop.shape[0]))
    return Segment(crop, box, line)


def segment_ink(ink: np.ndarray, mode: str = "auto") -> list[Segment]:
    """Split an ink map (H, W) (ink > 0, paper = 0) into characters in reading order.

    ``single``: all ink is one character. ``multi``: components, merged and split.
    ``auto``: like ``multi``, but one component group is split only when it is very wide.
    """
    if mode not in MODES:
        raise ValueError(f"unknown segment mode {mode!r} (expected one of {list(MODES)})")
    if mode == "single":
        whole = _crop(ink, 0, 0, 0)
        return [whole] if whole is not None else []
    labels, _ = ndimage.label(ink > 0, structure=_EIGHT)
    groups = [
        _Group(s[0].start, s[0].stop, s[1].start, s[1].stop, [i + 1])
        for i, s in enumerate(ndimage.find_objects(labels))
        if s is not None
    ]
    groups = _merge(groups)
    max_aspect = 1.6 if mode == "auto" and len(groups) == 1 else 1.15
    segments = []
    for line_no, line in enumerate(_lines(groups)):
        for g in line:
            region = labels[g.y0 : g.y1, g.x0 : g.x1]
            own = np.where(np.isin(region, g.labels), ink[g.y0 : g.y1, g.x0 : g.x1], 0.0)
            bounds = [0, *_cuts(own, max_aspect), g.width]
            for a, b in pairwise(bounds):
                piece = _crop(own[:, a:b], g.x0 + a, g.y0, line_no)
                if piece is not None:
                    segments.append(piece)
    return segments
