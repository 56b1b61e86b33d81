"""Seed images and hypothesis strategies for fuzzing the decoder and ``POST /v1/predict``.

The seeds are valid images in every allowlisted format and awkward mode (16-bit, palette with
transparency, CMYK, animated, 1x100000 strips), headers that claim enormous or zero sizes, and
formats that must be refused. The strategies mutate them (bit flips, overwrites, truncation,
splices, dimension rewrites) or produce random bytes.
"""

from __future__ import annotations

import io
import struct
import zlib
from functools import cache

import numpy as np
from hypothesis import strategies as st
from PIL import Image, ImageDraw

__all__ = ["EXPECTED_CODES", "fuzz_inputs", "seed_corpus"]

#: every status a client upload may get, with the error codes documented for it
EXPECTED_CODES = {
    400: {"bad_request", "bad_parameter", "missing_image", "bad_json", "bad_base64", "bad_image"},
    413: {"too_large"},
    415: {"unsupported_media_type"},
    422: {"no_ink", "too_many_characters"},
}


def _drawing(mode: str, size: tuple[int, int] = (40, 40)) -> Image.Image:
    img = Image.new("L", size, 255)
    w, h = size
    ImageDraw.Draw(img).line([(w // 2, h // 6), (w // 2, h * 5 // 6)], fill=0, width=max(1, w // 8))
    if mode == "I;16":
        return Image.fromarray(np.asarray(img, dtype=np.uint16) * np.uint16(257))
    return img.convert(mode)


def _save(img: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def _png_header_only(width: int, height: int, depth: int = 8) -> bytes:
    """A grey PNG whose IHDR claims ``width`` x ``height`` pixels of ``depth`` bits (valid
    CRC) with one tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))  # fmt: skip


def _with_gif_screen(data: bytes, width: int, height: int) -> bytes:
    return data[:6] + struct.pack("<HH", width, height) + data[10:]


def _with_bmp_size(data: bytes, width: int, height: int) -> bytes:
    return data[:18] + struct.pack("<ii", width, height) + data[26:]


def _with_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    sof = data.index(b"\xff\xc0")
    return data[: sof + 5] + struct.pack(">HH", height, width) + data[sof + 9 :]


def _animated_gif() -> bytes:
    frames = [_drawing("L"), Image.new("L", (40, 40), 255), _drawing("L").rotate(90)]
    frames = [f.convert("P") for f in frames]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0,
                 transparency=255)  # fmt: skip


def _palette_png_with_transparency() -> bytes:
    img = _drawing("L").convert("P")
    return _save(img, "PNG", transparency=255)


def _exif_rotated_jpeg() -> bytes:
    img = _drawing("L", (40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(img, "JPEG", exif=exif)


@cache
def seed_corpus() -> dict[str, bytes]:
    """Named seed uploads: valid images of every allowed format and mode, and hostile headers."""
    png = _save(_drawing("L"), "PNG")
    gif = _save(_drawing("P"), "GIF")
    bmp = _save(_drawing("RGB"), "BMP")
    jpeg = _save(_drawing("RGB"), "JPEG", quality=90)
    strip = Image.new("L", (1, 100_000), 255)
    ImageDraw.Draw(strip).line([(0, 40_000), (0, 60_000)], fill=0)
    return {
        "png_l": png,
        "png_rgb": _save(_drawing("RGB"), "PNG"),
        "png_rgba": _save(_drawing("RGBA"), "PNG"),
        "png_la": _save(_drawing("LA"), "PNG"),
        "png_1bit": _save(_drawing("1"), "PNG"),
        "png_16bit": _save(_drawing("I;16"), "PNG"),
        "png_palette_trns": _palette_png_with_transparency(),
        "png_1x100000": _save(strip, "PNG"),
        "png_100000x1": _save(strip.transpose(Image.Transpose.ROTATE_90), "PNG"),
        "png_huge_header": _png_header_only(100_000, 100_000),
        # 1-bit: decoded by Pillow (8-bit grey goes to OpenCV), whose warning range it tests
        "png_bomb_warning_range": _png_header_only(10_000, 10_000, depth=1),
        "png_zero_width": _png_header_only(0, 10),
        # no image data, then a chunk declaring 2 GB: OpenCV allocated it (found by the fuzzer)
        "png_chunk_past_the_end": _png_header_only(10, 10)[:33] + b"\x80\0\0\0IEND",
        "jpeg_rgb": jpeg,
        "jpeg_gray": _save(_drawing("L"), "JPEG"),
        "jpeg_cmyk": _save(_drawing("CMYK"), "JPEG"),
        "jpeg_progressive": _save(_drawing("RGB"), "JPEG", progressive=True),
        "jpeg_exif_rotated": _exif_rotated_jpeg(),
        "jpeg_huge_header": _with_jpeg_size(jpeg, 65_000, 65_000),
        "jpeg_zero_size": _with_jpeg_size(jpeg, 0, 0),
        "gif": gif,
        "gif_animated": _animated_gif(),
        "gif_huge_screen": _with_gif_screen(gif, 65_535, 65_535),
        "gif_zero_screen": _with_gif_screen(gif, 0, 0),
        "webp_lossy": _save(_drawing("RGB"), "WEBP", quality=80),
        "webp_lossless_rgba": _save(_drawing("RGBA"), "WEBP", lossless=True),
        "bmp_rgb": bmp,
        "bmp_1bit": _save(_drawing("1"), "BMP"),
        "bmp_huge_header": _with_bmp_size(bmp, 60_000, 60_000),
        "bmp_negative_height": _with_bmp_size(bmp, 40, -40),
        "blank_png": _save(Image.new("L", (40, 40), 255), "PNG"),
        "tiff_named_png": _save(_drawing("L"), "TIFF"),
        "ico": _save(_drawing("RGB"), "ICO"),
        "pdf": _save(_drawing("RGB"), "PDF"),
        "eps": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 40 40\nshowpage\n",
        "psd": b"8BPS\x00\x01" + b"\x00" * 6 + struct.pack(">HIIHH", 1, 40, 40, 8, 1),
        "svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="40" height="40"/>',
        "empty": b"",
    }


def _flip_bits(data: bytes, positions: list[int]) -> bytes:
    out = bytearray(data)
    for p in positions:
        out[p % len(out)] ^= 1 << (p % 8)
    return bytes(out)


def _overwrite(data: bytes, at: int, chunk: bytes) -> bytes:
    at %= len(data)
    return data[:at] + chunk + data[at + len(chunk) :]


def _mutated(seed: bytes, draw) -> bytes:
    if not seed:
        return seed
    kind = draw(st.sampled_from(["flip", "overwrite", "truncate", "insert", "splice"]))
    if kind == "flip":
        return _flip_bits(seed, draw(st.lists(st.integers(0, 8 * len(seed)), min_size=1,
                                              max_size=8)))  # fmt: skip
    if kind == "overwrite":
        return _overwrite(seed, draw(st.integers(0, len(seed))),
                          draw(st.binary(min_size=1, max_size=8)))  # fmt: skip
    if kind == "truncate":
        return seed[: draw(st.integers(0, len(seed)))]
    at = draw(st.integers(0, len(seed)))
    if kind == "insert":
        return seed[:at] + draw(st.binary(min_size=1, max_size=64)) + seed[at:]
    other = draw(st.sampled_from(sorted(seed_corpus().values())))
    return seed[:at] + other[draw(st.integers(0, len(other))) :]


@st.composite
def fuzz_inputs(draw) -> bytes:
    """One upload: a seed, a mutated seed, random bytes, or random bytes behind a magic number."""
    seeds = seed_corpus()
    choice = draw(st.sampled_from(["seed", "mutated", "mutated", "mutated", "random", "magic"]))
    if choice == "random":
        return draw(st.binary(max_size=2048))
    if choice == "magic":
        magic = draw(st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a",
                                      b"BM", b"RIFF\x00\x00\x00\x00WEBPVP8 "]))  # fmt: skip
        return magic + draw(st.binary(max_size=512))
    seed = seeds[draw(st.sampled_from(sorted(seeds)))]
    if choice == "seed":
        return seed
    data = _mutated(seed, draw)
    if draw(st.booleans()):
        data = _mutated(data, draw)
    return data
