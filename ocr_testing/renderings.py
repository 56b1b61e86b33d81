"""Render MNIST-style digits (28x28 float, ink = 1) the way users upload them.

Shared by the golden tests and ``scripts/eval_renderings.py``. Every function is deterministic
given its ``rng``.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "CAPTURES", "RENDERINGS", "DigitString", "drawn_seven", "grid_paper_photo",
    "inside_and_covering",
    "render_string", "render_wobbly", "table_corner"]

Rendering = Callable[[np.ndarray, np.random.Generator], bytes]


def _u8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)


def _upscale(digit: np.ndarray, size: int) -> np.ndarray:
    """Bicubic upscale of a 28x28 ink map to ``size`` x ``size`` (float in [0, 1])."""
    img = Image.fromarray(digit.astype(np.float32), mode="F")
    out = np.asarray(img.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
    return np.clip(out, 0.0, 1.0)


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def white_on_black_png(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """The MNIST array itself: 28x28 grayscale PNG, white ink on black."""
    return _encode(Image.fromarray(_u8(digit), mode="L"), "PNG")


def black_on_white_jpeg(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """300x300 grayscale JPEG (quality 85), black ink on white."""
    return _encode(Image.fromarray(_u8(1.0 - _upscale(digit, 300)), mode="L"), "JPEG", quality=85)


def _paper(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Off-white RGB page (float 0..255) with sensor noise and a lighting gradient."""
    base = np.array([238.0, 233.0, 220.0]) * rng.uniform(0.92, 1.0)
    ramp = np.linspace(1.0, rng.uniform(0.85, 0.95), width)[None, :, None]
    noise = rng.normal(0.0, 5.0, (height, width, 1))
    return base * ramp + noise


def blue_ink_page(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Blue ballpoint on a noisy off-white 480x360 page, digit off-centre; RGB JPEG."""
    h, w = 360, 480
    size = int(rng.integers(110, 170))
    page = _paper(h, w, rng)
    y = int(rng.integers(5, h - size - 5))
    x = int(rng.choice([rng.integers(5, w // 2 - size // 2), rng.integers(w // 2, w - size - 5)]))
    alpha = _upscale(digit, size)[..., None]
    ink = np.array([25.0, 40.0, 150.0])
    region = page[y : y + size, x : x + size]
    page[y : y + size, x : x + size] = region * (1.0 - alpha) + ink * alpha
    return _encode(Image.fromarray(_u8(page / 255.0), mode="RGB"), "JPEG", quality=90)


def _grid(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(height, width) float in [0, 1]: where a squared page's printed lines are (1-2 px,
    every 18-26 px, light), the whole grid turned by up to 2 degrees as a phone photo is."""
    step, thick = int(rng.integers(18, 27)), int(rng.integers(1, 3))
    big = np.zeros((2 * height, 2 * width), np.float32)
    for offset in range(int(rng.integers(step)), 2 * max(height, width), step):
        big[offset : offset + thick, :] = 1.0
        big[:, offset : offset + thick] = 1.0
    turned = Image.fromarray(big, mode="F").rotate(float(rng.uniform(-2, 2)),
                                                  resample=Image.Resampling.BILINEAR)
    top, left = height // 2, width // 2
    return np.asarray(turned, dtype=np.float32)[top : top + height, left : left + width]


def _write(page: np.ndarray, digit: np.ndarray, rng: np.random.Generator,
           ink: tuple[float, float, float], size: int, texture: float = 0.0) -> np.ndarray:
    """``page`` (H, W, 3 float 0..255) with ``digit`` written in colour ``ink`` at ``size``
    px somewhere inside; ``texture`` takes up to that share of each stroke pixel away."""
    h, w = page.shape[:2]
    y, x = int(rng.integers(5, h - size - 5)), int(rng.integers(5, w - size - 5))
    alpha = _upscale(digit, size)[..., None]
    if texture:
        alpha = alpha * rng.uniform(1.0 - texture, 1.0, alpha.shape)
    region = page[y : y + size, x : x + size]
    page[y : y + size, x : x + size] = region * (1.0 - alpha) + np.array(ink) * alpha
    return page


def _lit(colour: tuple[float, float, float], height: int, width: int,
         rng: np.random.Generator, noise: float) -> np.ndarray:
    """A surface of ``colour`` under light falling off to one side, with sensor noise."""
    ramp = np.linspace(1.0, rng.uniform(0.8, 0.95), width)[None, :, None]
    return np.array(colour) * ramp + rng.normal(0.0, noise, (height, width, 1))


def _jpeg(page: np.ndarray) -> bytes:
    return _encode(Image.fromarray(_u8(page / 255.0), mode="RGB"), "JPEG", quality=88)


def grid_paper_photo(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Blue ink on squared paper (light blue-grey grid), 480x360 RGB JPEG; an empty ``digit``
    (all zeros) gives the blank page."""
    h, w = 360, 480
    page = _paper(h, w, rng)
    grid = _grid(h, w, rng)[..., None] * rng.uniform(0.5, 0.9)
    page = page * (1.0 - grid) + np.array([120.0, 150.0, 190.0]) * grid
    return _jpeg(_write(page, digit, rng, (25.0, 40.0, 150.0), int(rng.integers(110, 170))))


def chalk_board(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Grainy chalk on a dark green board, 480x360 RGB JPEG."""
    page = _lit((55.0, 70.0, 60.0), 360, 480, rng, 8.0)
    return _jpeg(_write(page, digit, rng, (215.0, 215.0, 205.0), int(rng.integers(110, 170)),
                        texture=0.5))


def sticky_note(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A yellow sticky note on a white desk, written on in black, 640x480 RGB JPEG."""
    page = _lit((235.0, 235.0, 235.0), 480, 640, rng, 4.0)
    note = _lit((250.0, 225.0, 105.0), 360, 400, rng, 4.0)
    page[60:420, 120:520] = _write(note, digit, rng, (30.0, 30.0, 40.0),
                                   int(rng.integers(120, 200)))
    return _jpeg(page)


def beige_ballpoint(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Faint grey-blue ballpoint on beige paper, 480x360 RGB JPEG."""
    page = _lit((222.0, 208.0, 180.0), 360, 480, rng, 6.0)
    return _jpeg(_write(page, digit, rng, (140.0, 135.0, 160.0), int(rng.integers(90, 150))))


def hand_shadow(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Dark blue ink on white paper, half in the soft-edged shadow of a hand (the shadow
    halves the light), 640x480 RGB JPEG."""
    page = _write(_lit((235.0, 232.0, 225.0), 480, 640, rng, 5.0), digit, rng,
                  (30.0, 30.0, 60.0), int(rng.integers(110, 170)))
    yy, xx = np.mgrid[0:480, 0:640]
    cx, cy, radius = rng.uniform(0, 640), rng.uniform(300, 700), rng.uniform(200, 350)
    edge = np.clip(np.hypot(xx - cx, yy - cy) - radius, 0.0, 20.0) / 20.0
    return _jpeg(page * (0.45 + 0.55 * edge)[..., None])


def table_corner(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Dark ink on a white sheet photographed askew, so that the wooden table shows as a
    triangle in one corner, its legs 15-30 % of the sides; 640x480 RGB JPEG."""
    page = _lit((235.0, 232.0, 225.0), 480, 640, rng, 5.0)
    _write(page[120:360, 160:480], digit, rng, (30.0, 30.0, 60.0),
           int(rng.integers(110, 170)))  # the middle of the sheet, clear of the corners
    yy, xx = np.mgrid[0:480, 0:640]
    if rng.random() < 0.5:
        yy = 479 - yy
    if rng.random() < 0.5:
        xx = 639 - xx
    across, down = rng.uniform(0.15, 0.3, 2)
    table = xx / (across * 640) + yy / (down * 480) < 1.0
    page[table] = np.array((70.0, 50.0, 35.0)) + rng.normal(0.0, 5.0, (int(table.sum()), 1))
    return _jpeg(page)


#: Photographed captures harder than RENDERINGS, measured by scripts/eval_renderings.py.
CAPTURES: dict[str, Rendering] = {
    "grid_paper_photo": grid_paper_photo,
    "chalk_board": chalk_board,
    "sticky_note": sticky_note,
    "beige_ballpoint": beige_ballpoint,
    "hand_shadow": hand_shadow,
    "table_corner": table_corner,
}


def rgba_canvas(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """280x280 canvas export: black strokes on fully transparent black pixels; RGBA PNG."""
    rgba = np.zeros((280, 280, 4), np.uint8)
    rgba[..., 3] = _u8(_upscale(digit, 280))
    return _encode(Image.fromarray(rgba, mode="RGBA"), "PNG")


def exif_rotated_photo(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """Phone photo stored sideways with EXIF Orientation = 6 (display rotated 90° clockwise)."""
    h, w = 300, 400
    page = _paper(h, w, rng).mean(axis=2)
    top, left = (h - 200) // 2, (w - 200) // 2
    alpha = _upscale(digit, 200)
    region = page[top : top + 200, left : left + 200]
    page[top : top + 200, left : left + 200] = region * (1.0 - alpha) + 35.0 * alpha
    upright = Image.fromarray(_u8(page / 255.0), mode="L")
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    return _encode(stored, "JPEG", quality=90, exif=exif.tobytes())


RENDERINGS: dict[str, Rendering] = {
    "white_on_black_png": white_on_black_png,
    "black_on_white_jpeg": black_on_white_jpeg,
    "blue_ink_page": blue_ink_page,
    "rgba_canvas": rgba_canvas,
    "exif_rotated_photo": exif_rotated_photo,
}


@dataclass(frozen=True)
class DigitString:
    """A rendered string of digits: the upload and where each digit was drawn."""

    data: bytes
    boxes: list[tuple[int, int, int, int]]  # (x, y, w, h) of each digit's ink, left to right


def drawn_seven(size: int = 28, mode: str = "L") -> bytes:
    """A black-on-white "7" of ``size`` pixels, PNG: 28x28 grayscale as a user's small upload
    would be; 280x280 "RGBA" as the drawing page sends its opaque canvas."""

    img = Image.new(mode, (size, size), "white")
    corners = [(7, 6), (21, 6), (12, 23)]
    ImageDraw.Draw(img).line([(x * size // 28, y * size // 28) for x, y in corners],
                             fill="black", width=3 * size // 28)
    return _encode(img, "PNG")


def render_string(
    digits: Sequence[np.ndarray],
    rng: np.random.Generator,
    *,
    touching: float = 0.2,
) -> DigitString:
    """Digits side by side, black on white, random gaps; a fraction ``touching`` of the gaps
    is pulled in until the ink overlaps (the digits touch). Grayscale PNG."""
    height = int(rng.integers(48, 96))
    scale = height / 20.0  # MNIST digits are 20 px tall inside the 28 px field
    crops = []
    for digit in digits:
        big = _upscale(digit, round(28 * scale))
        rows = np.flatnonzero(big.max(axis=1) > 0.05)
        cols = np.flatnonzero(big.max(axis=0) > 0.05)
        crops.append(big[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
    margin = height // 2
    gaps = rng.uniform(0.15, 0.6, len(crops) - 1) * height
    touch = rng.random(len(crops) - 1) < touching
    gaps[touch] = -rng.uniform(0.02, 0.08, touch.sum()) * height
    width = int(sum(c.shape[1] for c in crops) + gaps.sum() + 2 * margin)
    canvas = np.zeros((height + 2 * margin, width), np.float32)
    boxes = []
    x = float(margin)
    for i, crop in enumerate(crops):
        ch, cw = crop.shape
        y = margin + (height - ch) // 2 + int(rng.integers(-height // 10, height // 10 + 1))
        xi = round(x)
        np.maximum(canvas[y : y + ch, xi : xi + cw], crop, out=canvas[y : y + ch, xi : xi + cw])
        boxes.append((xi, y, cw, ch))
        x += cw + (float(gaps[i]) if i < len(gaps) else 0.0)
    return DigitString(_encode(Image.fromarray(_u8(1.0 - canvas), mode="L"), "PNG"), boxes)


def render_wobbly(digits: Sequence[np.ndarray], rng: np.random.Generator) -> DigitString:
    """Digits written quickly in one row: 28x28 cells 2-14 px apart, each shifted down by
    0-20 px on a 48 px tall page (the baseline wobbles by up to about a digit's height).
    Black on white, grayscale PNG."""
    cell, page_height, margin = 28, 48, 6
    gaps = rng.integers(2, 15, len(digits) - 1)
    width = 2 * margin + cell * len(digits) + int(gaps.sum())
    canvas = np.zeros((page_height, width), np.float32)
    boxes = []
    x = margin
    for i, digit in enumerate(digits):
        y = int(rng.integers(0, page_height - cell + 1))
        spot = canvas[y : y + cell, x : x + cell]
        np.maximum(spot, digit, out=spot)
        rows, cols = np.flatnonzero(digit.max(axis=1) > 0), np.flatnonzero(digit.max(axis=0) > 0)
        boxes.append((x + int(cols[0]), y + int(rows[0]), int(cols[-1] - cols[0] + 1),
                      int(rows[-1] - rows[0] + 1)))
        x += cell + (int(gaps[i]) if i < len(gaps) else 0)
    return DigitString(_encode(Image.fromarray(_u8(1.0 - canvas), mode="L"), "PNG"), boxes)


def inside_and_covering(box: tuple[int, int, int, int], drawn: tuple[int, int, int, int]) -> bool:
    """``box`` lies within ``drawn`` (3 px slack) and covers most of it; less than all of it
    because stray MNIST specks inside ``drawn`` are rightly dropped."""
    x, y, w, h = box
    dx, dy, dw, dh = drawn
    within = x >= dx - 3 and y >= dy - 3 and x + w <= dx + dw + 3 and y + h <= dy + dh + 3
    return within and w * h >= 0.6 * dw * dh
