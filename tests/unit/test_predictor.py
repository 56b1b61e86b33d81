"""Predictor: uploads -> characters with confidence, top-k, boxes, and the "?" reject."""

from __future__ import annotations

import dataclasses
import io
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import train_small_model
from PIL import Image

from ocr_service import predictor as predictor_module
from ocr_service.datasets import load_dataset, split_dataset
from ocr_service.features import model_inputs
from ocr_service.image_errors import ImageError, NoInkError, TooManyCharactersError
from ocr_service.model_store import ArtifactSpec, load_model, save_model
from ocr_service.predictor import REJECT, CharacterResult, Predictor
from ocr_service.training import TrainConfig, train
from ocr_testing.fuzz_corpus import seed_corpus
from ocr_testing.renderings import (
    RENDERINGS,
    grid_paper_photo,
    inside_and_covering,
    render_string,
    render_wobbly,
    white_on_black_png,
)
from ocr_testing.server_utils import wait_until


@pytest.fixture(scope="session")
def mnist_model_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small real MNIST-scheme MLP trained on the mnist5k training split (a few seconds)."""
    dataset = load_dataset("mnist5k")
    splits = split_dataset(dataset, seed=0, test_fraction=0.2)
    config = TrainConfig(hidden=(128,), epochs=12, patience=0, dropout=0.0)
    result = train(config, splits.train, splits.val, len(dataset.classes))
    path = tmp_path_factory.mktemp("models") / "mnist-mlp"
    save_model(
        path,
        result.network,
        ArtifactSpec(name="mnist-mlp", classes=dataset.classes, height=28, width=28,
                     scheme="mnist", features="pixels",
                     reject_threshold=result.reject_threshold),
    )
    return str(path)


@pytest.fixture(scope="module")
def predictor(mnist_model_path: str) -> Predictor:
    return Predictor(load_model(mnist_model_path))


@pytest.fixture(scope="module")
def confident(predictor: Predictor) -> tuple[np.ndarray, np.ndarray]:
    """Held-out digits the model reads right with p > 0.95 as plain arrays: (N, 28, 28), labels."""
    images, labels = split_dataset(load_dataset("mnist5k"), seed=0, test_fraction=0.2).test
    probs = predictor.artifact.network.predict_proba(images.reshape(len(images), -1))
    keep = (probs.argmax(axis=1) == labels) & (probs.max(axis=1) > 0.95)
    return images[keep], labels[keep]


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def test_every_rendering_gives_the_same_answer_as_the_array(predictor, confident):
    images, labels = confident
    rng = np.random.default_rng(0)
    for digit, label in zip(images[:20], labels[:20], strict=True):
        for render in RENDERINGS.values():
            result = predictor.predict_bytes(render(digit, rng))
            assert [c.top[0][0] for c in result.characters] == [str(label)]


def test_digit_strings_are_read_in_order_with_their_boxes(predictor, confident):
    images, labels = confident
    rng = np.random.default_rng(1)
    for _ in range(5):
        idx = rng.choice(len(labels), size=5, replace=False)
        rendered = render_string(images[idx], rng, touching=0.0)
        result = predictor.predict_bytes(rendered.data)
        assert result.text == "".join(str(v) for v in labels[idx])
        for char, drawn in zip(result.characters, rendered.boxes, strict=True):
            assert inside_and_covering(char.box, drawn)


def test_lines_are_joined_with_newlines(predictor, confident):
    images, labels = confident
    rng = np.random.default_rng(2)
    first = np.asarray(Image.open(io.BytesIO(render_string(images[:3], rng, touching=0.0).data)))
    second = np.asarray(Image.open(io.BytesIO(render_string(images[3:5], rng, touching=0.0).data)))
    width = max(first.shape[1], second.shape[1])
    page = np.full((first.shape[0] + second.shape[0], width), 255, np.uint8)
    page[: first.shape[0], : first.shape[1]] = first
    page[first.shape[0] :, : second.shape[1]] = second
    text = predictor.predict_bytes(_encode(Image.fromarray(page), "PNG")).text
    assert text == "".join(map(str, labels[:3])) + "\n" + "".join(map(str, labels[3:5]))


def test_a_page_of_three_wobbling_rows_is_read_row_by_row(predictor, confident):
    images, labels = confident
    rng = np.random.default_rng(5)
    rows = [np.asarray(Image.open(io.BytesIO(render_wobbly(images[i : i + 4], rng).data)))
            for i in (0, 4, 8)]
    width = max(row.shape[1] for row in rows)
    page = np.full((sum(row.shape[0] + 12 for row in rows), width), 255, np.uint8)
    top = 6
    for row in rows:
        page[top : top + row.shape[0], : row.shape[1]] = row
        top += row.shape[0] + 12  # a band of paper between the rows
    text = predictor.predict_bytes(_encode(Image.fromarray(page), "PNG")).text
    assert text == "\n".join("".join(map(str, labels[i : i + 4])) for i in (0, 4, 8))


def test_single_mode_reads_everything_as_one_character(predictor, confident):
    images, _ = confident
    rendered = render_string(images[:3], np.random.default_rng(3), touching=0.0)
    result = predictor.predict_bytes(rendered.data, segment="single")
    (char,) = result.characters
    left, right = rendered.boxes[0], rendered.boxes[-1]
    assert char.box[0] <= left[0] + 3 and char.box[0] + char.box[2] >= right[0] + right[2] - 3


def test_blank_pages_and_noise_never_give_a_confident_digit(predictor):
    rng = np.random.default_rng(4)
    uploads = [
        np.full((200, 300), 250, np.uint8),
        rng.integers(0, 256, (120, 120), dtype=np.uint8),
        np.clip(rng.normal(200, 25, (240, 320)), 0, 255).astype(np.uint8),
        (np.linspace(60, 230, 500)[None, :] + rng.normal(0, 3, (400, 500))).astype(np.uint8),
    ]
    yy, xx = np.mgrid[0:300, 0:400]
    grain = 125 + 25 * np.sin(xx / 6.0 + 3 * np.sin(yy / 45.0)) + rng.normal(0, 6, (300, 400))
    uploads.append(np.clip(grain, 0, 255).astype(np.uint8))  # a photo of a wooden desk
    sheets = [_encode(Image.fromarray(array), "JPEG") for array in uploads]
    sheets += [grid_paper_photo(np.zeros((28, 28), np.float32), rng) for _ in range(3)]
    for data in sheets:
        try:
            result = predictor.predict_bytes(data)
        except NoInkError:
            continue
        assert set(result.text) <= {REJECT}


def test_answers_below_the_calibrated_threshold_are_rejected(predictor, confident):
    digit = confident[0][0]
    data = white_on_black_png(digit, np.random.default_rng(0))
    artifact = predictor.artifact
    strict = dataclasses.replace(
        artifact, metadata={**artifact.metadata, "calibration": {"reject_threshold": 1.01}}
    )
    (char,) = Predictor(strict).predict_bytes(data).characters
    assert char.char == REJECT
    assert char.top[0][0] == str(confident[1][0])  # the best guess is still reported
    lenient = dataclasses.replace(artifact, metadata={**artifact.metadata, "calibration": {}})
    assert Predictor(lenient).predict_bytes(data).text == str(confident[1][0])


def test_top_k_and_the_json_shape(predictor, confident):
    data = white_on_black_png(confident[0][1], np.random.default_rng(0))
    result = predictor.predict_bytes(data, top_k=3)
    (char,) = result.characters
    probs = [p for _, p in char.top]
    assert len(char.top) == 3 and probs == sorted(probs, reverse=True)
    assert char.top[0] == (char.char, char.confidence) and sum(probs) <= 1.0 + 1e-6
    assert len(predictor.predict_bytes(data, top_k=50).characters[0].top) == 10

    body = result.to_dict()
    assert set(body) == {"text", "characters"}
    assert set(body["characters"][0]) == {"char", "confidence", "box", "top"}
    assert body["characters"][0]["top"][0] == {"char": char.char, "p": pytest.approx(probs[0])}
    with_input = result.to_dict(include_inputs=True)["characters"][0]["input"]
    assert np.array(with_input).shape == (28, 28)
    np.testing.assert_allclose(with_input, char.model_input, atol=5e-4)


@pytest.mark.parametrize("stored", ["png", "jpeg-rotated-by-exif"])
def test_boxes_of_a_large_photo_are_in_its_own_pixels(predictor, confident, stored):
    # Large uploads are analysed reduced (JPEGs decoded at 1/2..1/8 scale); boxes must still
    # be in the upright upload's pixels.
    digit, label = confident[0][2], confident[1][2]
    page = np.full((1800, 2400), 235, np.uint8)
    big = Image.fromarray(((1 - digit) * 255).astype(np.uint8)).resize((560, 560))
    page[900:1460, 1500:2060] = np.minimum(page[900:1460, 1500:2060], np.asarray(big))
    ys, xs = np.nonzero(page < 200)
    if stored == "png":
        data = _encode(Image.fromarray(page), "PNG")
    else:
        exif = Image.Exif()
        exif[0x0112] = 6
        buf = io.BytesIO()
        Image.fromarray(page).transpose(Image.Transpose.ROTATE_90).save(
            buf, format="JPEG", quality=92, exif=exif.tobytes()
        )
        data = buf.getvalue()
    (char,) = predictor.predict_bytes(data).characters
    assert char.char == str(label)
    x, y, w, h = char.box
    assert abs(x - xs.min()) <= 12 and abs(y - ys.min()) <= 12
    assert abs(x + w - xs.max()) <= 12 and abs(y + h - ys.max()) <= 12


def test_concurrent_requests_match_sequential_ones(predictor, confident):
    rng = np.random.default_rng(5)
    uploads = [
        RENDERINGS[name](confident[0][i], rng) for i in range(8) for name in sorted(RENDERINGS)
    ]
    expected = [predictor.predict_bytes(u).to_dict(include_inputs=True) for u in uploads]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda u: predictor.predict_bytes(u).to_dict(True), uploads))
    assert got == expected


def _two_readings_at_once(predictor: Predictor, first: bytes, second: bytes, monkeypatch):
    """Read ``first`` in one thread, held inside the network until released, and ``second``
    with another ``Predictor`` of the same model (as during a model swap) in a second thread.

    Returns whether the second reading reached the network while the first was held, and
    both results (as dicts, with the model inputs).
    """
    other = Predictor(predictor.artifact)
    network = predictor.artifact.network
    classify = network.predict_proba_with_stats
    entered, release = [], threading.Event()

    def held_open(x):
        entered.append(threading.current_thread().name)
        if len(entered) == 1:
            release.wait(10)
        return classify(x)

    monkeypatch.setattr(network, "predict_proba_with_stats", held_open)
    results: dict[str, dict] = {}
    threads = [
        threading.Thread(target=lambda p=p, u=u, name=name: results.update(
            {name: p.predict_bytes(u).to_dict(True)}), name=name)
        for name, p, u in (("first", predictor, first), ("second", other, second))
    ]  # fmt: skip
    try:
        threads[0].start()
        assert wait_until(lambda: entered, 10)
        threads[1].start()
        # taking turns, the second reading cannot get there; in parallel it gets there at once
        overlapped = wait_until(lambda: len(entered) == 2, 0.5)
    finally:
        release.set()
        for thread in threads:
            thread.join(10)
    assert entered == ["first", "second"]
    return overlapped, [results["first"], results["second"]]


def test_character_sized_readings_take_turns(predictor, confident, monkeypatch):
    rng = np.random.default_rng(6)
    uploads = [white_on_black_png(digit, rng) for digit in confident[0][:2]]  # 28x28
    expected = [predictor.predict_bytes(u).to_dict(True) for u in uploads]
    overlapped, got = _two_readings_at_once(predictor, *uploads, monkeypatch)
    assert not overlapped
    assert got == expected


def test_larger_images_read_in_parallel(predictor, confident, monkeypatch):
    page = Image.fromarray((255 * (1 - confident[0][0])).astype(np.uint8)).resize((300, 300))
    upload = _encode(page, "PNG")
    assert predictor_module.TURN_PIXELS < 300 * 300
    expected = predictor.predict_bytes(upload).to_dict(True)
    overlapped, got = _two_readings_at_once(predictor, upload, upload, monkeypatch)
    assert overlapped
    assert got == [expected, expected]


def test_an_optdigits_model_reads_uploads_through_its_own_scheme(small_model_path):
    predictor = Predictor.from_path(small_model_path)
    assert predictor.artifact.scheme == "optdigits"
    digits = load_dataset("digits")
    _, test = split_dataset(digits, seed=0).train, split_dataset(digits, seed=0).test
    correct = 0
    for image, label in zip(test[0][:40], test[1][:40], strict=True):
        big = Image.fromarray(image, mode="F").resize((160, 160), Image.Resampling.BICUBIC)
        page = np.zeros((240, 240), np.float32)
        page[40:200, 40:200] = np.clip(np.asarray(big), 0.0, 1.0)
        gray = Image.fromarray((255 * (1.0 - page)).astype(np.uint8))
        result = predictor.predict_bytes(_encode(gray, "PNG"))
        correct += result.characters[0].top[0][0] == digits.classes[label]
    assert correct >= 32


def test_from_path_defaults_to_the_configured_model(monkeypatch, mnist_model_path):
    monkeypatch.setenv("OCR_MODEL_PATH", mnist_model_path)
    assert Predictor.from_path().artifact.name == "mnist-mlp"


def _one_by_one(predictor: Predictor, uploads: list[bytes], **options) -> list:
    outcomes = []
    for data in uploads:
        try:
            outcomes.append(predictor.predict_bytes(data, **options))
        except ImageError as exc:
            outcomes.append(exc)
    return outcomes


def _assert_same_outcomes(got: list, expected: list, p_tolerance: float) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        if isinstance(b, ImageError):
            assert type(a) is type(b) and str(a) == str(b)
            continue
        assert a.text == b.text
        assert len(a.characters) == len(b.characters)
        for ca, cb in zip(a.characters, b.characters, strict=True):
            assert (ca.char, ca.box, ca.line) == (cb.char, cb.box, cb.line)
            assert [c for c, _ in ca.top] == [c for c, _ in cb.top]
            # One network call over many rows may round the last float32 bits differently.
            assert [p for _, p in ca.top] == pytest.approx([p for _, p in cb.top], abs=p_tolerance)
            np.testing.assert_array_equal(ca.model_input, cb.model_input)


@pytest.mark.parametrize("segment", ["auto", "multi", "single"])
def test_predict_many_gives_the_results_of_one_call_per_upload(predictor, confident, segment):
    rng = np.random.default_rng(11)
    digits = confident[0]
    uploads = [RENDERINGS[name](digits[i], rng) for i in range(3) for name in sorted(RENDERINGS)]
    uploads += [render_string(list(digits[i : i + 4]), rng, touching=0.5).data for i in range(6)]
    # every seed, readable or not: a bad upload gets its own error, not the batch's
    uploads += list(seed_corpus().values())
    # errors of the later steps too: no ink on the page, and too many marks to read
    dots = np.full((320, 320), 255, np.uint8)
    for dy in range(4):
        for dx in range(4):
            dots[dy::8, dx::8] = 0  # 1,600 dots of 4x4 pixels
    uploads[5:5] = [_encode(Image.new("L", (60, 40), 250), "PNG"), _encode(
        Image.fromarray(dots), "PNG")]  # fmt: skip
    expected = _one_by_one(predictor, uploads, top_k=4, segment=segment)
    assert type(expected[5]) is NoInkError
    if segment != "single":
        assert type(expected[6]) is TooManyCharactersError
    assert sum(not isinstance(e, ImageError) for e in expected) > len(uploads) // 2
    got = predictor.predict_many(uploads, top_k=4, segment=segment)
    _assert_same_outcomes(got, expected, p_tolerance=1e-6)


def test_predict_many_reads_large_batches_in_several_pooled_calls(predictor, confident,
                                                                 monkeypatch):
    rng = np.random.default_rng(12)
    uploads = [white_on_black_png(digit, rng) for digit in confident[0][:10]]  # 28x28 each
    uploads.insert(4, b"not an image")
    expected = _one_by_one(predictor, uploads)
    reads = []
    real_read = Predictor._read
    monkeypatch.setattr(predictor_module, "_POOL_PIXELS", 3 * 28 * 28)
    monkeypatch.setattr(Predictor, "_read", lambda self, pages, *a: reads.append(len(pages))
                        or real_read(self, pages, *a))  # fmt: skip
    got = predictor.predict_many(uploads)
    assert reads == [3, 3, 3, 1]  # a pool is read once it holds 3 uploads' pixels
    _assert_same_outcomes(got, expected, p_tolerance=1e-6)


def test_predict_many_with_a_recurrent_network_reads_each_upload_on_its_own(tmp_path):
    predictor = Predictor.from_path(train_small_model(tmp_path / "rbp", model="rbp", epochs=3))
    digits = load_dataset("digits")
    pages = [Image.fromarray((255 - digits.images[i] * 255).astype(np.uint8)).resize(
        (64, 64)) for i in range(12)]  # fmt: skip
    uploads = [_encode(page, "PNG") for page in pages] + [b"not an image"]
    expected = _one_by_one(predictor, uploads)
    assert [isinstance(e, ImageError) for e in expected] == [False] * 12 + [True]
    got = predictor.predict_many(uploads)
    _assert_same_outcomes(got, expected, p_tolerance=0.0)
    for a, b in zip(got[:-1], expected[:-1], strict=True):
        assert a.stats == b.stats  # its own relaxation, not the batch's


def test_predict_many_of_nothing_readable(predictor):
    outcomes = predictor.predict_many([b"", b"GIF89a"])
    expected = _one_by_one(predictor, [b"", b"GIF89a"])
    assert [type(o) for o in outcomes] == [type(o) for o in expected]
    assert predictor.predict_many([]) == []


def _output_bias_model(tmp_path, bias: dict[int, float]) -> Predictor:
    """A non-character MLP whose answer is set by its output biases alone (the last layer's
    weights are zero), so the test does not depend on what random weights make of a digit."""
    from ocr_service.nn import MLP

    net = MLP.build(784, 11, hidden=(8,), seed=0)
    state = net.state_dict()
    last_w = [k for k in state if k.endswith(".W")][-1]
    last_b = [k for k in state if k.endswith(".b")][-1]
    state[last_w][...] = 0.0
    for index, value in bias.items():
        state[last_b][index] = value
    meta = {
        "classes": [str(d) for d in range(10)],
        "non_character": True,
        "input": {"height": 28, "width": 28, "scheme": "mnist", "features": "pixels"},
        "calibration": {"reject_threshold": 0.4},
    }
    save_model(tmp_path / "junk", net, meta)
    return Predictor(load_model(tmp_path / "junk"))


def _read_one(predictor: Predictor) -> CharacterResult:
    digit = np.zeros((28, 28), np.float32)
    digit[4:24, 12:16] = 1.0
    png = white_on_black_png(digit, np.random.default_rng(0))
    (char,) = predictor.predict_bytes(png, top_k=10).characters
    return char


@pytest.mark.parametrize("junk", [12.0, 200.0])  # 200: the classes underflow to exactly 0
def test_the_non_character_output_is_never_an_answer(tmp_path, junk):
    char = _read_one(_output_bias_model(tmp_path, {10: junk}))
    assert char.char == REJECT  # the ten classes are equally likely among themselves
    assert {c for c, _ in char.top} == {str(d) for d in range(10)}
    assert sum(p for _, p in char.top) == pytest.approx(1.0, abs=1e-5)
    assert np.isfinite(char.confidence)


def test_a_class_under_the_non_character_output_is_still_answered(tmp_path):
    # The non-character output leads (bias 12 vs 11) but among the classes "3" is clear: it
    # steers the cuts, and a well-cut piece of a touching pair keeps its answer.
    char = _read_one(_output_bias_model(tmp_path, {10: 12.0, 3: 11.0}))
    assert char.char == "3" and char.confidence > 0.95


def test_a_gradient_features_model_reads_uploads_through_its_own_features(tmp_path):
    dataset = load_dataset("mnist5k")
    splits = split_dataset(dataset, seed=0, test_fraction=0.2)
    config = TrainConfig(hidden=(64,), epochs=6, patience=0, dropout=0.0, features="gradients")
    result = train(config, splits.train, splits.val, len(dataset.classes))
    save_model(tmp_path / "grad", result.network, ArtifactSpec(
        classes=dataset.classes, height=28, width=28, scheme="mnist", features="gradients",
        reject_threshold=result.reject_threshold))
    reader = Predictor(load_model(tmp_path / "grad"))
    images, labels = splits.test
    rng = np.random.default_rng(0)
    texts = [reader.predict_bytes(white_on_black_png(image, rng)).text for image in images[:100]]
    assert np.mean([t == str(label) for t, label in zip(texts, labels, strict=False)]) >= 0.9
    char = reader.predict_bytes(white_on_black_png(images[0], rng)).characters[0]
    features = model_inputs(char.model_input[None], "gradients")
    expected = result.network.predict_proba(features)[0].max()
    assert char.confidence == pytest.approx(float(expected), abs=1e-6)
