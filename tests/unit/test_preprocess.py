"""Upload bytes -> model input: decoding safety, polarity, alpha, EXIF, golden arrays."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from ocr_service.datasets import load_dataset, split_dataset
from ocr_service.image_errors import (
    CorruptImageError,
    ImageError,
    ImageTooLargeError,
    NoInkError,
    UnsupportedImageError,
)
from ocr_service.preprocess import crop_to_ink, decode_image, normalize_character, preprocess_bytes
from ocr_testing.renderings import RENDERINGS, black_on_white_jpeg, white_on_black_png

# Golden tolerance: mean absolute difference per pixel (values in [0, 1]) between the model
# input of a rendering and the original MNIST array, allowing a one-pixel shift (centring
# rounds the centre of mass to whole pixels, and a blurred copy may round the other way).
# Renderings upscale the digit (bicubic) and the pipeline shrinks it back, which blurs
# strokes slightly: about 0.03 on average, 0.06 at worst over 500 digits.
GOLDEN_MEAN_TOLERANCE = 0.07


def golden_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two 28x28 inputs, best over shifts of at most 1 pixel."""
    return min(
        float(np.abs(np.roll(a, (dy, dx), axis=(0, 1)) - b).mean())
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    )


@pytest.fixture(scope="module")
def held_out() -> tuple[np.ndarray, np.ndarray]:
    """One held-out mnist5k test digit of each class: (10, 28, 28) ink = 1, labels."""
    images, labels = split_dataset(load_dataset("mnist5k"), seed=0, test_fraction=0.2).test
    first = [int(np.flatnonzero(labels == c)[0]) for c in range(10)]
    return images[first], labels[first]


def _png(array: np.ndarray, mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


@pytest.mark.parametrize("rendering", sorted(RENDERINGS))
def test_every_rendering_preprocesses_to_the_original_mnist_array(held_out, rendering):
    images, _ = held_out
    rng = np.random.default_rng(1)
    for digit in images:
        result = preprocess_bytes(RENDERINGS[rendering](digit, rng), "mnist")
        assert result.shape == (28, 28) and result.dtype == np.float32
        assert result.min() >= 0.0 and result.max() <= 1.0
        assert golden_distance(result, digit) < GOLDEN_MEAN_TOLERANCE


def test_mnist_digit_as_uploaded_is_left_practically_unchanged(held_out):
    images, _ = held_out
    for digit in images:
        result = preprocess_bytes(white_on_black_png(digit, np.random.default_rng(0)), "mnist")
        # Detached strokes fainter than the ink threshold are dropped like specks.
        assert golden_distance(result, digit) < 0.01


def test_renderings_agree_with_each_other(held_out):
    digit = held_out[0][3]
    rng = np.random.default_rng(2)
    arrays = [preprocess_bytes(render(digit, rng), "mnist") for render in RENDERINGS.values()]
    for a in arrays:
        for b in arrays:
            assert golden_distance(a, b) < GOLDEN_MEAN_TOLERANCE


def test_mnist_scheme_fits_20_pixels_and_centres_the_mass():
    ink = np.zeros((300, 120), np.float32)
    ink[20:280, 30:90] = 1.0  # a tall bar, off-centre in its image
    out = normalize_character(ink, "mnist")
    rows, cols = np.flatnonzero(out.any(axis=1)), np.flatnonzero(out.any(axis=0))
    assert rows[-1] - rows[0] + 1 == 20
    assert 4 <= cols[-1] - cols[0] + 1 <= 6  # aspect ratio kept: 60/260 of 20
    com_y = (out.sum(axis=1) @ np.arange(28)) / out.sum()
    com_x = (out.sum(axis=0) @ np.arange(28)) / out.sum()
    assert abs(com_y - 14) <= 0.5 and abs(com_x - 14) <= 0.5


def test_optdigits_scheme_approximately_reproduces_scikit_learn_digits():
    # The 8x8 digits are themselves block counts, so enlarging one and counting again cannot
    # be exact: measured mean error 0.08, mean correlation 0.93 over these 100 digits.
    digits = load_dataset("digits")
    errors, correlations = [], []
    for image in digits.images[:100]:
        big = Image.fromarray(image, mode="F").resize((160, 160), Image.Resampling.BICUBIC)
        page = np.zeros((240, 240), np.float32)
        page[40:200, 40:200] = np.clip(np.asarray(big), 0.0, 1.0)
        out = preprocess_bytes(_png((255 * (1.0 - page)).astype(np.uint8)), "optdigits")
        assert out.shape == (8, 8) and set(np.unique(out * 16)) <= set(range(17))
        errors.append(np.abs(out - image).mean())
        correlations.append(np.corrcoef(out.ravel(), image.ravel())[0, 1])
    assert np.mean(errors) < 0.1
    assert np.mean(correlations) > 0.9


def test_unknown_scheme_is_a_value_error():
    with pytest.raises(ValueError, match="scheme"):
        normalize_character(np.ones((5, 5), np.float32), "emnist")


def test_polarity_is_read_from_the_image(held_out):
    digit = held_out[0][7]
    light_ink = preprocess_bytes(_png((digit * 255).astype(np.uint8)), "mnist")
    dark_ink = preprocess_bytes(_png(((1 - digit) * 255).astype(np.uint8)), "mnist")
    np.testing.assert_allclose(light_ink, dark_ink, atol=0.02)


def test_transparent_pixels_are_paper_whatever_their_colour(held_out):
    digit = held_out[0][2]
    alpha = (digit * 255).astype(np.uint8)
    reference = preprocess_bytes(_png(((1 - digit) * 255).astype(np.uint8)), "mnist")
    for colour in (0, 255):  # black strokes on transparent black / on transparent white
        rgba = np.zeros((28, 28, 4), np.uint8)
        rgba[..., :3] = colour
        rgba[digit > 0, :3] = 0
        rgba[..., 3] = alpha
        np.testing.assert_allclose(
            preprocess_bytes(_png(rgba, "RGBA"), "mnist"), reference, atol=0.02
        )


def test_an_opaque_canvas_export_reads_exactly_like_its_grayscale(held_out):
    # The drawing page sends opaque RGBA PNGs; a nearly opaque one still goes through the
    # alpha flattening and must stay close.
    gray = ((1 - held_out[0][3]) * 255).astype(np.uint8)
    expected = decode_image(_png(gray))
    rgba = np.dstack([gray, gray, gray, np.full_like(gray, 255)])
    np.testing.assert_array_equal(decode_image(_png(rgba, "RGBA")), expected)
    rgba[0, 0, 3] = 254
    np.testing.assert_allclose(decode_image(_png(rgba, "RGBA")), expected, atol=0.01)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA"])
def test_png_decodes_as_pillow_converts_it_to_grey(mode):
    # Plain grey, RGB and RGBA PNGs take OpenCV's decoder, the rest Pillow's: one result.
    rng = np.random.default_rng(1)
    colours = rng.integers(0, 256, (40, 30, 4), np.uint8)
    colours[..., :3] //= 2  # dark on average: transparent pixels become white paper
    colours[..., 3] = np.where(rng.random((40, 30)) < 0.5, 255, colours[..., 3])
    img = Image.fromarray(colours, "RGBA").convert(mode)
    reference = np.asarray(img.convert("RGBA").convert("L"), np.float32) / 255
    alpha = np.asarray(img.convert("RGBA").getchannel("A"), np.float32) / 255
    if mode in ("RGBA", "LA"):
        reference = reference * alpha + (1 - alpha)
    np.testing.assert_allclose(decode_image(_encode(img, "PNG")), reference, atol=1.01 / 255)


@pytest.mark.parametrize("declared", [0x8000_0000, 1_000_000])
def test_a_png_declaring_a_chunk_longer_than_itself_is_left_to_pillow(monkeypatch, declared):
    # OpenCV's reader trusts declared chunk lengths: 69 fuzzed bytes declaring a 2 GB chunk
    # made it allocate 2 GB and take seconds. Pillow reads what is there.
    from ocr_service import imageops

    pixels = np.zeros((10, 12), np.uint8)
    pixels[2:8, 5:7] = 255
    valid = _png(pixels)
    iend = valid.rindex(b"IEND") - 4
    damaged = valid[:iend] + struct.pack(">I", declared) + b"IEND" + b"\xaeB`\x82"
    calls = []
    with monkeypatch.context() as patch:
        patch.setattr(imageops, "decode", lambda data: calls.append(data))
        np.testing.assert_array_equal(decode_image(damaged), pixels / np.float32(255))
    assert not calls
    assert decode_image(valid).shape == (10, 12)


def test_exif_orientation_is_applied():
    upright = np.full((60, 40), 255, np.uint8)
    upright[5:20, 5:35] = 0  # a dark bar near the top
    gray_upright = decode_image(_png(upright))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated; viewers turn it 90° clockwise
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)
    decoded = decode_image(_encode(stored, "PNG", exif=exif.tobytes()))
    assert decoded.shape == (60, 40)
    np.testing.assert_allclose(decoded, gray_upright)


def _exif_orientation_6() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return exif.tobytes()


@pytest.mark.parametrize("where", ["raw_profile", "xmp"])
def test_orientation_in_png_text_chunks_is_applied(where):
    # ImageMagick writes EXIF as a hex "raw profile" text chunk, Adobe tools as XMP.
    from PIL.PngImagePlugin import PngInfo

    upright = np.full((60, 40), 255, np.uint8)
    upright[5:20, 5:35] = 0
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)
    info = PngInfo()
    if where == "raw_profile":
        payload = b"Exif\x00\x00" + _exif_orientation_6()
        info.add_text("Raw profile type exif",
                      f"\nexif\n{len(payload):8d}\n{payload.hex()}\n", zip=True)
    else:
        info.add_itxt("XML:com.adobe.xmp", '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
                      'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
                      'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/>'
                      "</rdf:RDF></x:xmpmeta>")
    decoded = decode_image(_encode(stored, "PNG", pnginfo=info))
    np.testing.assert_allclose(decoded, decode_image(_png(upright)))


def test_a_damaged_exif_block_is_ignored():
    # Orientation 6 plus a corrupted maker tag: Pillow's exif_transpose raises struct.error.
    exif = (
        b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x02\x01\t\x00\x02\x00\x00\x00\x04\x8aam"
        b"\x00\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\xf6\x00\x00\x00\x00\x00"
    )
    img = Image.fromarray(np.full((30, 20), 200, np.uint8))
    assert decode_image(_encode(img, "JPEG", exif=exif)).shape == (30, 20)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "WEBP", "GIF"])
def test_every_allowed_format_decodes(fmt, held_out):
    digit = held_out[0][5]
    img = Image.fromarray(((1 - digit) * 255).astype(np.uint8)).resize((112, 112))
    extra = {"lossless": True} if fmt == "WEBP" else {}
    out = preprocess_bytes(_encode(img, fmt, **extra), "mnist")
    assert golden_distance(out, digit) < GOLDEN_MEAN_TOLERANCE


def test_gif_uses_the_first_frame(held_out):
    digit = held_out[0][4]
    first = Image.fromarray(((1 - digit) * 255).astype(np.uint8))
    blank = Image.new("L", (28, 28), 255)
    data = _encode(first, "GIF", save_all=True, append_images=[blank])
    assert golden_distance(preprocess_bytes(data, "mnist"), digit) < 0.01


def test_sixteen_bit_png_is_rescaled_not_clipped(held_out):
    digit = held_out[0][6]
    data = _encode(Image.fromarray((digit * 65535).astype(np.uint16)), "PNG")
    np.testing.assert_allclose(decode_image(data), digit, atol=1 / 255)


def test_a_page_photographed_on_a_dark_table_is_read_from_the_page(held_out):
    digit = held_out[0][8]
    rng = np.random.default_rng(0)
    photo = np.full((600, 800), 0.25, np.float32) + rng.normal(0, 0.02, (600, 800))
    photo[60:560, 120:700] = 0.92  # the sheet of paper, table visible all around
    big = Image.fromarray(digit, mode="F").resize((200, 200), Image.Resampling.BICUBIC)
    photo[200:400, 300:500] -= 0.8 * np.clip(np.asarray(big), 0.0, 1.0)
    data = _encode(Image.fromarray((np.clip(photo, 0, 1) * 255).astype(np.uint8)), "JPEG")
    assert golden_distance(preprocess_bytes(data, "mnist"), digit) < GOLDEN_MEAN_TOLERANCE


def test_specks_around_the_character_are_ignored(held_out):
    digit = held_out[0][1]
    page = np.full((200, 200), 255, np.uint8)
    big = np.asarray(Image.fromarray(((1 - digit) * 255).astype(np.uint8)).resize((100, 100)))
    page[50:150, 50:150] = big
    clean = preprocess_bytes(_png(page), "mnist")
    for y, x in [(5, 5), (190, 20), (10, 180), (170, 185)]:
        page[y : y + 2, x : x + 2] = 0
    np.testing.assert_allclose(preprocess_bytes(_png(page), "mnist"), clean)


def test_thin_pen_strokes_are_thickened_to_mnist_weight():
    page = np.full((600, 600), 255, np.uint8)
    page[100:500, 298:302] = 0  # a "1" drawn with a 4 px pen, 400 px tall
    out = preprocess_bytes(_png(page), "mnist")
    assert out.max() > 0.9
    assert (out > 0.5).sum() >= 20


def _noise_and_blank_images() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    gradient = np.linspace(90, 220, 400)[None, :] + np.linspace(0, 30, 300)[:, None]
    photo = gradient + rng.normal(0, 4, (300, 400))
    return {
        "white page": _png(np.full((300, 300), 255, np.uint8)),
        "black page": _png(np.zeros((28, 28), np.uint8)),
        "uniform noise": _png(rng.integers(0, 256, (200, 200), dtype=np.uint8)),
        "gaussian noise": _png(np.clip(rng.normal(128, 40, (200, 200)), 0, 255).astype(np.uint8)),
        "photo with no writing": _encode(Image.fromarray(photo.astype(np.uint8)), "JPEG"),
        "transparent canvas": _png(np.zeros((50, 50, 4), np.uint8), "RGBA"),
    }


@pytest.mark.parametrize("name", sorted(_noise_and_blank_images()))
def test_no_ink_is_reported(name):
    with pytest.raises(NoInkError) as info:
        preprocess_bytes(_noise_and_blank_images()[name], "mnist")
    assert (info.value.status, info.value.code) == (422, "no_ink")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header(width: int, height: int) -> bytes:
    """A PNG claiming ``width`` x ``height`` grey pixels whose data is a few junk bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"junk!")


# As in production (preprocess turns Pillow's warning into an error; pytest resets filters).
@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(
    ("size", "max_pixels"),
    [((5000, 5000), 1_000_000), ((10_000, 10_000), 10**9), ((30_000, 30_000), 10**12)],
    ids=["over-our-limit", "over-pillow-warning", "decompression-bomb"],
)
def test_too_many_pixels_is_refused_from_the_header(size, max_pixels):
    # The pixel data is junk: a decoder that looked at it would report corruption.
    with pytest.raises(ImageTooLargeError) as info:
        decode_image(_png_header(*size), max_pixels=max_pixels)
    assert (info.value.status, info.value.code) == (413, "too_large")


def _truncated_jpeg() -> bytes:
    return black_on_white_jpeg(np.ones((28, 28), np.float32), np.random.default_rng(0))[:400]


@pytest.mark.parametrize(
    ("data", "error", "status", "code"),
    [
        (b"", CorruptImageError, 400, "bad_image"),
        (b"hello, this is not an image at all", CorruptImageError, 400, "bad_image"),
        (_png_header(30, 30)[:20], CorruptImageError, 400, "bad_image"),
        (_png_header(30, 30), CorruptImageError, 400, "bad_image"),
        (_truncated_jpeg(), CorruptImageError, 400, "bad_image"),
        (
            _encode(Image.new("L", (20, 20)), "TIFF"),
            UnsupportedImageError,
            415,
            "unsupported_media_type",
        ),
        (
            b'<svg xmlns="http://www.w3.org/2000/svg"/>',
            UnsupportedImageError,
            415,
            "unsupported_media_type",
        ),
        (b"%PDF-1.4\n", UnsupportedImageError, 415, "unsupported_media_type"),
    ],
    ids=["empty", "text", "cut-header", "bad-pixel-data", "truncated-jpeg", "tiff", "svg", "pdf"],
)
def test_bad_bytes_raise_the_right_error(data, error, status, code):
    with pytest.raises(error) as info:
        decode_image(data)
    assert isinstance(info.value, ImageError)
    assert (info.value.status, info.value.code) == (status, code)
    assert str(info.value)


def test_crop_to_ink_finds_the_box_of_the_ink():
    ring = np.zeros((5, 7), np.float32)
    ring[0, 3] = ring[4, 1] = ring[2, 0] = ring[3, 6] = 1.0  # ink on every side, not corners
    crop, box = crop_to_ink(ring)
    assert box == (0, 0, 7, 5) and crop.shape == (5, 7)
    crop, box = crop_to_ink(np.pad(ring, ((2, 1), (4, 3))))
    assert box == (4, 2, 7, 5)
    np.testing.assert_array_equal(crop, ring)
    with pytest.raises(NoInkError):
        crop_to_ink(np.zeros((4, 4), np.float32))
