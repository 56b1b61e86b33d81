"""Digits in writing styles the training images lack, drawn stroke by stroke or from fonts.

MNIST's writers were American census staff and school pupils: its 1 is a bare bar, its 7
is uncrossed and its 4 mostly closed. Much of the world writes a 1 with a flag (often on a
foot), crosses its 7 and leaves its 4 open at the top, and a model that never saw those
reads them as 7, 1 and 9. ``make_styled`` draws such digits with jittered strokes, and
digits of every class in handwriting fonts that Debian packages (``HANDWRITING_FONTS``:
other writers, other hands), so training stays reproducible on a fresh machine. Every
example goes through ``normalize_character``, the path an uploaded character takes; the
training augmentation then varies them further.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .preprocess import SCHEMES, normalize_character

__all__ = [
    "HANDWRITING_FONTS", "STROKE_STYLES", "MissingFontsError", "font_files", "make_styled"]

#: Share of the examples drawn from strokes (the styles below); the rest come from fonts.
STROKE_FRACTION = 0.3
_CANVAS = 96  # px: drawings are made at this size, then normalised like an upload
#: Where Debian installs fonts, and the handwriting fonts used, by the package holding them.
FONT_ROOT = Path("/usr/share/fonts")
HANDWRITING_FONTS: dict[str, tuple[str, ...]] = {
    "fonts-bwht": tuple(f"opentype/bwht/BecauseWe{name}-Regular.otf" for name in (
        "Build", "Connect", "Create", "Learn", "Mentor", "Organize")),
    "fonts-breip": ("truetype/breip/Breip.ttf",),
    "fonts-comic-neue": tuple(f"opentype/comic-neue/ComicNeue-{style}.otf" for style in (
        "Regular", "Bold", "Italic", "Light")),
    "fonts-dancingscript": ("opentype/dancingscript/DancingScript-Regular.otf",),
    "fonts-dkg-handwriting": tuple(f"truetype/fifthhorseman/dkg{style}.ttf" for style in (
        "", "Bd", "It", "BI")),
    "fonts-humor-sans": ("truetype/humor-sans/Humor-Sans.ttf",),
    "fonts-kaushanscript": ("opentype/kaushanscript/KaushanScript-Regular.otf",),
    "fonts-klee": ("truetype/klee/KleeOne-Regular.ttf", "truetype/klee/KleeOne-SemiBold.ttf"),
    "fonts-kristi": ("truetype/kristi/Kristi.ttf",),
    "fonts-rufscript": ("truetype/rufscript/Rufscript010.ttf",),
}


class MissingFontsError(ValueError):
    """Handwriting fonts are not installed: styled digits would not be reproducible."""


Strokes = list[list[tuple[float, float]]]  # polylines in a unit box: x right, y down


def _flag_one(rng: np.random.Generator) -> Strokes:
    """A 1 with a flag down to the left from its top, on a foot two times in five."""
    length, drop = rng.uniform(0.2, 0.45), rng.uniform(0.12, 0.4)
    strokes = [[(0.5 - length, drop), (0.5, 0.0), (0.5, 1.0)]]
    if rng.random() < 0.4:
        half = rng.uniform(0.15, 0.3)
        strokes.append([(0.5 - half, 1.0), (0.5 + half, 1.0)])
    return strokes


def _crossed_seven(rng: np.random.Generator) -> Strokes:
    """A 7 with a bar across its stem, half of them with a tick before the top bar."""
    foot = rng.uniform(0.3, 0.55)
    top = [(0.15, 0.0), (0.85, 0.0), (foot, 1.0)]
    if rng.random() < 0.5:
        top.insert(0, (0.12, rng.uniform(0.1, 0.2)))
    height = rng.uniform(0.45, 0.6)
    across = 0.85 + (foot - 0.85) * height  # where the stem is at that height
    half = rng.uniform(0.15, 0.25)
    return [top, [(across - half, height), (across + half, height)]]


def _open_four(rng: np.random.Generator) -> Strokes:
    """A 4 whose two strokes do not meet at the top."""
    bar = rng.uniform(0.55, 0.7)
    stem = rng.uniform(0.6, 0.75)
    return [
        [(rng.uniform(0.25, 0.45), 0.0), (0.1, bar), (0.9, bar)],
        [(stem, rng.uniform(0.15, 0.35)), (stem, 1.0)],
    ]


#: Digit -> the stroke drawing of a style of it that MNIST lacks.
STROKE_STYLES: dict[str, Callable[[np.random.Generator], Strokes]] = {
    "1": _flag_one, "7": _crossed_seven, "4": _open_four,
}


def _draw(strokes: Strokes, rng: np.random.Generator) -> np.ndarray:
    """Jittered strokes -> ink image (_CANVAS, _CANVAS) float32, ink = 1.

    Each point moves a little, the glyph is slanted, scaled to a random aspect and drawn
    with a random pen width, so no two examples are the same.
    """
    slant = rng.uniform(-0.25, 0.25)
    width = rng.uniform(0.45, 0.8)
    height = rng.uniform(0.6, 0.8)
    pen = int(rng.integers(3, 11))
    image = Image.new("L", (_CANVAS, _CANVAS), 0)
    draw = ImageDraw.Draw(image)
    for line in strokes:
        points = []
        for x, y in line:
            x, y = x + rng.normal(0, 0.03), y + rng.normal(0, 0.03)
            px = _CANVAS * (0.5 + width * (x - 0.5) + slant * (0.5 - y) * height)
            py = _CANVAS * (0.5 + height * (y - 0.5))
            points.append((px, py))
        draw.line(points, fill=255, width=pen, joint="curve")
        for px, py in (points[0], points[-1]):  # round pen ends
            draw.ellipse([px - pen / 2, py - pen / 2, px + pen / 2, py + pen / 2], fill=255)
    return np.asarray(image, dtype=np.float32) / 255.0


def font_files(root: Path = FONT_ROOT) -> list[Path]:
    """Every file of ``HANDWRITING_FONTS`` under ``root``, in a fixed order. Raises
    ``MissingFontsError`` naming the Debian packages to install when any is missing: a
    model trained on fewer fonts would silently differ."""
    files = [(package, root / name) for package, names in HANDWRITING_FONTS.items()
             for name in names]
    missing = sorted({package for package, path in files if not path.is_file()})
    if missing:
        raise MissingFontsError(
            "styled digits need the handwriting fonts of Debian's "
            f"{' '.join(missing)} (apt-get install {' '.join(missing)}; make fonts)")
    return [path for _, path in files]


def _font_digit(font: Path, digit: str, rng: np.random.Generator) -> np.ndarray:
    """One digit in ``font`` at a random size, ink image float32 (ink = 1)."""
    face = ImageFont.truetype(str(font), size=int(rng.integers(48, 72)))
    image = Image.new("L", (_CANVAS, _CANVAS), 0)
    ImageDraw.Draw(image).text((_CANVAS / 2, _CANVAS / 2), digit, fill=255, font=face,
                               anchor="mm")
    return np.asarray(image, dtype=np.float32) / 255.0


def make_styled(
    count: int, classes: list[str], scheme: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` model inputs ``(count, H, W)`` float32 of ``scheme`` and their labels
    (indices into ``classes``, int64).

    A share ``STROKE_FRACTION`` are stroke drawings of the styles in ``STROKE_STYLES``
    (of the digits among ``classes``), the rest digits of every class in ``classes`` from
    ``font_files()``. Deterministic for a given ``rng`` state. Raises ``ValueError`` when
    ``classes`` holds no digit, ``MissingFontsError`` when fonts are missing.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    digits = [c for c in classes if len(c) == 1 and c.isdigit()]
    if count and not digits:
        raise ValueError("styled examples are digits, and the classes hold none")
    styled = [d for d in STROKE_STYLES if d in digits]
    fonts = font_files() if count else []
    images, labels = [], []
    for _ in range(count):
        if styled and rng.random() < STROKE_FRACTION:
            digit = styled[rng.integers(len(styled))]
            ink = _draw(STROKE_STYLES[digit](rng), rng)
        else:
            digit = digits[rng.integers(len(digits))]
            ink = _font_digit(fonts[rng.integers(len(fonts))], digit, rng)
        images.append(normalize_character(ink, scheme))
        labels.append(classes.index(digit))
    return (np.stack(images) if images else np.empty((0, *SCHEMES[scheme]), np.float32),
            np.array(labels, dtype=np.int64))
