"""Upload bytes -> validated grayscale image -> (ink map, ``ink``) -> normalised model input.

One path for training (image folders, renderings) and serving. Model inputs follow the
artifact's ``scheme`` (``SCHEMES``; docs/training.md): ink = 1.0, paper = 0.0, float32.
"""

from __future__ import annotations

import contextlib
import io
import math
import struct
import warnings

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from . import imageops
from .image_errors import (
    CorruptImageError,
    ImageError,
    ImageTooLargeError,
    NoInkError,
    UnsupportedImageError,
)
from .ink import ink_from_gray
from .options import DEFAULT_MAX_PIXELS
from .schemes import SCHEMES

__all__ = [
    "SCHEMES",
    "crop_to_ink",
    "decode_image",
    "decode_scaled",
    "normalize_character",
    "preprocess_bytes",
]

ALLOWED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
#: Uploads are analysed at about this many pixels: a phone photo at full resolution costs
#: many times the time and segments no better.
ANALYSIS_PIXELS = 1_000_000

# Pillow only *warns* between its pixel limit and twice that; make it an error we can turn
# into a 413 (a per-call catch_warnings would not be thread-safe).
warnings.simplefilter("error", Image.DecompressionBombWarning)

# Signatures of allowlisted formats: bytes that start like these but fail to open are corrupt.
_ALLOWED_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"RIFF")
# Recognisable images (or documents) we deliberately do not decode.
_OTHER_IMAGE_MAGIC = (
    b"II*\x00",
    b"MM\x00*",  # TIFF
    b"\x00\x00\x01\x00",  # ICO
    b"%PDF",
    b"%!PS",
    b"8BPS",  # PDF, PostScript, Photoshop
    b"<?xml",
    b"<svg",
    b"qoif",  # SVG, QOI
    b"\x00\x00\x00\x0cjP  ",
    b"\xff\x4f\xff\x51",  # JPEG 2000
    b"\x76\x2f\x31\x01",  # OpenEXR
)


def _pillow_recognises(prefix: bytes) -> bool:
    """Whether one of Pillow's other format plugins claims these first bytes (PPM, PCX,
    SGI, DDS, ...): such an upload is an image of a refused type, not a damaged one."""
    Image.init()
    for fmt, (_factory, accept) in Image.OPEN.items():
        if fmt in ALLOWED_FORMATS or accept is None:
            continue
        with contextlib.suppress(IndexError, ValueError, TypeError, struct.error):
            if accept(prefix):
                return True
    return False


def _classify_unreadable(data: bytes) -> ImageError:
    if data.startswith(_ALLOWED_MAGIC):
        return CorruptImageError("the image data is damaged or truncated")
    if (
        data.startswith(_OTHER_IMAGE_MAGIC)
        or data[4:12] in (b"ftypheic", b"ftypavif", b"ftypmif1")
        or _pillow_recognises(data[:16])  # Pillow itself reads 16 bytes to identify
    ):
        return UnsupportedImageError("unsupported image type (use PNG, JPEG, GIF, BMP or WebP)")
    return CorruptImageError("the data is not a readable image")


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    """Raise ``ImageTooLargeError`` for an image of more pixels than the service reads."""
    limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
    if width * height > limit:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {width * height} pixels; the limit is {limit}"
        )


def _open(
    data: bytes, max_pixels: int, work_pixels: int | None
) -> tuple[Image.Image, tuple[int, int]]:
    """Identify the format by content and check the pixel count before decoding any pixels.

    JPEGs larger than ``work_pixels`` are decoded at 1/2, 1/4 or 1/8 scale directly
    (DCT scaling), much faster than decoding every pixel and shrinking after. Returns the
    loaded image and the upload's own ``(width, height)``.
    """
    if not data:
        raise CorruptImageError("empty image")
    try:
        img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"image has too many pixels ({exc})") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise _classify_unreadable(data) from exc
    width, height = img.size
    _check_pixels(width, height, max_pixels)
    if width == 0 or height == 0:
        raise CorruptImageError("image has no pixels")
    if work_pixels and img.format == "JPEG" and width * height > work_pixels:
        factor = np.sqrt(width * height / work_pixels)
        img.draft("L", (int(width / factor), int(height / factor)))
    try:
        img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"image has too many pixels ({exc})") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        raise CorruptImageError(f"the image data is damaged or truncated ({exc})") from exc
    return img, (width, height)


def _upright(img: Image.Image) -> Image.Image:
    try:
        # exif_transpose copies even an upright image: only call it when it will transpose.
        if img.getexif().get(ExifTags.Base.Orientation, 1) == 1:
            return img
        return ImageOps.exif_transpose(img)
    except Exception:  # malformed EXIF (e.g. struct.error) must not reject decoded pixels
        return img


def _levels(img: Image.Image | np.ndarray) -> np.ndarray:
    """An 8-bit image's values as float32 levels in [0, 1] (H, W).

    One float32 multiply per pixel: a 256-entry lookup table gives the same values but its
    gather is slower, the more so the larger the image (docs/benchmarks.md).
    """
    return np.multiply(np.asarray(img), np.float32(1 / 255), dtype=np.float32)


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info


def _to_gray(img: Image.Image) -> np.ndarray:
    """Grayscale (H, W) float32 in [0, 1]; transparent pixels become paper."""
    if img.mode.startswith("I;16") or img.mode == "I":
        # 16-bit PNGs: convert("L") would clip at 255 instead of rescaling.
        gray = np.asarray(img, dtype=np.float32)
        return np.clip(gray / 65535.0, 0.0, 1.0)
    if not _has_alpha(img):
        if img.mode != "L":
            img = img.convert("L")
        return _levels(img)
    rgba = img.convert("RGBA")
    return _onto_paper(_levels(rgba.convert("L")), np.asarray(rgba.getchannel("A")))


def _onto_paper(gray: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``gray`` (H, W) float32 levels with transparent pixels made paper, by ``alpha``
    (H, W) uint8 (255: opaque)."""
    if alpha.min() == 255:  # opaque (the drawing page's canvas): no paper
        return gray
    weights = _levels(alpha)
    weight = weights.sum()
    if weight == 0.0:
        return np.ones_like(gray)
    # Canvas exports often draw black strokes over transparent *black* pixels, so the colour
    # of transparent pixels means nothing: paper is whatever contrasts with the visible strokes.
    stroke = float((gray * weights).sum() / weight)
    paper = np.float32(1.0 if stroke < 0.5 else 0.0)
    return gray * weights + paper * (1.0 - weights)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: PNG colour types OpenCV decodes as they are: grey, RGB and RGBA, by their channels.
_PLAIN_PNG_CHANNELS = {0: 1, 2: 3, 6: 4}
#: What makes a PNG Pillow's to decode: an orientation (an eXIf chunk, ImageMagick's raw
#: EXIF profile, Adobe's XMP), palette transparency, or an ICC profile (libpng warns about
#: many, on the service's error log).
_PILLOW_PNG_MARKERS = (b"eXIf", b"Raw profile type exif", b"XML:com.adobe.xmp", b"tRNS",
                       b"iCCP")


def _chunks_in_bounds(data: bytes) -> bool:
    """Whether every chunk of PNG ``data`` lies within it, up to an IEND chunk. OpenCV's PNG
    reader trusts a chunk's declared length: a 69-byte upload declaring a 2 GB chunk made it
    allocate 2 GB and take seconds (Pillow reads what is there and reports the damage)."""
    at, size = len(_PNG_SIGNATURE), len(data)
    while at + 8 <= size:
        end = at + 12 + int.from_bytes(data[at : at + 4], "big")  # length, type, data, CRC
        if end > size:
            return False
        if data[at + 4 : at + 8] == b"IEND":
            return True
        at = end
    return False


def _plain_png(data: bytes, max_pixels: int) -> np.ndarray | None:
    """Grayscale (H, W) float32 of an 8-bit grey, RGB or RGBA PNG without orientation, ICC
    profile or palette transparency (what canvases and most tools write), decoded by OpenCV
    at a fraction of Pillow's cost per upload; None for any other upload, which Pillow decodes
    (and diagnoses, if damaged)."""
    if not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR" or len(data) < 33:
        return None
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    if depth != 8 or colour not in _PLAIN_PNG_CHANNELS or any(
            marker in data for marker in _PILLOW_PNG_MARKERS) or not _chunks_in_bounds(data):
        return None
    _check_pixels(width, height, max_pixels)
    pixels = imageops.decode(data)
    channels = _PLAIN_PNG_CHANNELS[colour]
    if (pixels is None or pixels.shape[:2] != (height, width) or width * height == 0
            or (pixels.shape[2] if pixels.ndim == 3 else 1) != channels):
        return None
    if channels == 1:
        return _levels(pixels)
    gray = _levels(imageops.grey(pixels))
    return gray if channels == 3 else _onto_paper(gray, pixels[..., 3])


def decode_scaled(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, work_pixels: int | None = None
) -> tuple[np.ndarray, tuple[float, float]]:
    """Like ``decode_image``, reduced to about ``work_pixels`` pixels (None: full size).

    Returns the grayscale image and ``(sy, sx)``: original pixels per returned pixel, to map
    boxes back to the upload's coordinates.
    """
    gray = _plain_png(data, max_pixels)
    if gray is not None:
        full = gray.shape[::-1]
    else:
        img, full = _open(data, max_pixels, work_pixels)
        upright = _upright(img)
        if upright.size != img.size:  # the EXIF orientation swapped the axes
            full = full[::-1]
        gray = _to_gray(upright)
    if work_pixels and gray.size > work_pixels:
        factor = int(np.ceil(np.sqrt(gray.size / work_pixels)))
        h, w = gray.shape
        gray = imageops.resize(gray, max(1, w // factor), max(1, h // factor))  # block means
    return gray, (full[1] / gray.shape[0], full[0] / gray.shape[1])


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode PNG/JPEG/GIF (first frame)/BMP/WebP bytes to grayscale (H, W) float32 in [0, 1].

    EXIF orientation is applied and alpha flattened onto paper. Raises ``ImageTooLargeError``
    (checked from the header, before decoding), ``UnsupportedImageError`` or
    ``CorruptImageError``.
    """
    return decode_scaled(data, max_pixels=max_pixels)[0]


def crop_to_ink(ink: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Tight crop of the nonzero pixels and its box ``(x, y, w, h)``; raises ``NoInkError``."""
    if ink.size and ink[0].any() and ink[-1].any() and ink[:, 0].any() and ink[:, -1].any():
        return ink, (0, 0, ink.shape[1], ink.shape[0])  # already tight, as segments are
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        raise NoInkError("no ink found")
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return ink[y0:y1, x0:x1], (int(x0), int(y0), int(x1 - x0), int(y1 - y0))


def _resize(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pillow's box filter (shrinking) or bilinear filter: the shipped model was trained on
    characters fitted by them, and OpenCV's resizing differs enough to cost it accuracy."""
    if img.shape == (height, width):
        return img.astype(np.float32, copy=True)
    shrinking = width <= img.shape[1] and height <= img.shape[0]
    method = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
    # frombuffer/tobytes: fromarray and asarray copy and check more, which shows on small crops
    src = np.ascontiguousarray(img, dtype=np.float32)
    out = Image.frombuffer("F", src.shape[::-1], src, "raw", "F", 0, 1).resize(
        (width, height), method
    )
    return np.clip(np.frombuffer(out.tobytes(), np.float32).reshape(height, width), 0.0, 1.0)


def _fit(crop: np.ndarray, box: int) -> np.ndarray:
    """Scale so the longer side is ``box`` pixels, preserving the aspect ratio."""
    h, w = crop.shape
    scale = box / max(h, w)
    return _resize(crop, max(1, round(w * scale)), max(1, round(h * scale)))


_MAX_DILATION_RADIUS = 24


def _thicken(crop: np.ndarray, target: float = 0.11) -> np.ndarray:
    """Dilate strokes much thinner than MNIST's (about a tenth of the character size).

    Stroke width ~ 2 * area / boundary length; fine-pen photos otherwise fade to grey specks
    when shrunk to 20 px.
    """
    mask = crop > 0.5
    area = np.count_nonzero(mask)
    if area == 0:
        return crop
    # Pixels on the crop's border are boundary pixels; inside, those with all 4 neighbours.
    inner = mask[1:-1, 1:-1]
    interior = inner & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    boundary = area - np.count_nonzero(interior)
    width = 2.0 * area / max(boundary, 1)
    missing = target * max(crop.shape) - width
    if missing < 1.0:
        return crop
    radius = int(np.ceil(missing / 2.0))
    if radius > _MAX_DILATION_RADIUS:
        # Dilation costs pixels x kernel width: shrink a huge crop first (it is fitted into
        # 20 px next anyway), so a 1-pixel line 300,000 px long cannot stall a worker.
        factor = radius / _MAX_DILATION_RADIUS
        h, w = crop.shape
        crop = _resize(crop, max(1, round(w / factor)), max(1, round(h / factor)))
        radius = _MAX_DILATION_RADIUS
    return imageops.dilate(crop, 2 * radius + 1)


def _mnist(crop: np.ndarray) -> np.ndarray:
    patch = _fit(_thicken(crop), 20)
    ph, pw = patch.shape
    total = patch.sum()
    if total <= 0:
        raise NoInkError("no ink found")
    # MNIST puts the centre of mass at pixel 14 (whole-pixel shifts, no resampling blur).
    cy = float(patch.sum(axis=1) @ np.arange(ph)) / total
    cx = float(patch.sum(axis=0) @ np.arange(pw)) / total
    top = min(max(math.floor(14.0 - cy + 0.5), 0), 28 - ph)
    left = min(max(math.floor(14.0 - cx + 0.5), 0), 28 - pw)
    out = np.zeros((28, 28), np.float32)
    out[top : top + ph, left : left + pw] = patch
    return out


def _optdigits(crop: np.ndarray) -> np.ndarray:
    patch = _fit(crop, 32) > 0.5
    ph, pw = patch.shape
    bitmap = np.zeros((32, 32), np.float32)
    top, left = (32 - ph) // 2, (32 - pw) // 2
    bitmap[top : top + ph, left : left + pw] = patch
    return bitmap.reshape(8, 4, 8, 4).sum(axis=(1, 3)) * np.float32(1 / 16)


def normalize_character(ink_crop: np.ndarray, scheme: str) -> np.ndarray:
    """One character's ink (any size, ink = 1) -> model input (H, W) float32 for ``scheme``.

    ``mnist``: 28x28, fitted in 20x20, centre of mass at the centre. ``optdigits``: 8x8 block
    counts of a 32x32 bitmap, divided by 16.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown input scheme {scheme!r} (expected one of {sorted(SCHEMES)})")
    crop, _ = crop_to_ink(np.asarray(ink_crop, dtype=np.float32))
    return _mnist(crop) if scheme == "mnist" else _optdigits(crop)


def preprocess_bytes(
    data: bytes, scheme: str, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Image bytes holding one character -> model input (H, W) float32 for ``scheme``.

    Decodes exactly as the predictor does (reduced to ``ANALYSIS_PIXELS``), so a training
    image from a folder and the same image uploaded give the same input.
    """
    gray, _ = decode_scaled(data, max_pixels=max_pixels, work_pixels=ANALYSIS_PIXELS)
    return normalize_character(ink_from_gray(gray), scheme)
