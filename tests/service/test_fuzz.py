"""Fuzzing the decoder/preprocessor, ``POST /v1/predict`` and ``POST /v1/feedback``: only
documented JSON 4xx errors (and a refused correction writes nothing).

In process, only ``ImageError`` subclasses may leave preprocessing; through the app, every
answer is 200 or a documented 4xx with its error code, never a 500. The seed corpus always
runs; the volume runs (in process, and against a real gunicorn whose workers must survive)
are marked slow.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
import time
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from ocr_service.app import create_app
from ocr_service.image_errors import ImageError, ImageTooLargeError, UnsupportedImageError
from ocr_service.predictor import Predictor
from ocr_service.preprocess import preprocess_bytes
from ocr_testing.fuzz_corpus import EXPECTED_CODES, fuzz_inputs, seed_corpus
from ocr_testing.server_utils import running_server

#: slowest case allowed (seconds): far below gunicorn's 30 s timeout, so no input can stall
#: a worker thread for long
MAX_CASE_SECONDS = 3.0
SLOW_CASES = 20_000
GUNICORN_CASES = 1_500

_BASE = settings(
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture],
)  # fmt: skip


def _fuzz(n: int) -> settings:
    """Settings of a fuzz run of ``n`` cases (no example database, no deadline)."""
    return settings(_BASE, max_examples=n)


_CONTENT_TYPES = ["image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp",
                  "image/x-anything"]  # fmt: skip


@st.composite
def requests_(draw) -> tuple[str, dict[str, str], bytes]:
    """(query, headers, body) of one ``POST /v1/predict`` carrying a fuzzed upload."""
    data = draw(fuzz_inputs())
    form = draw(st.sampled_from(["raw", "raw", "raw", "multipart", "json", "bad_json"]))
    query = draw(st.sampled_from(["", "?segment=single", "?segment=multi&top_k=1",
                                  "?include_input=1"]))  # fmt: skip
    if form == "raw":
        return query, {"Content-Type": draw(st.sampled_from(_CONTENT_TYPES))}, data
    if form == "bad_json":
        depth = draw(st.integers(1, 100_000))
        body = draw(st.sampled_from([b"[" * depth, b'{"image":' * depth, data]))
        return query, {"Content-Type": "application/json"}, body
    if form == "json":
        body = json.dumps({"image": base64.b64encode(data).decode()}).encode()
        return query, {"Content-Type": "application/json"}, body
    boundary = "fuzzboundary7MA4YWxkTrZu0gW"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
            f"filename=\"upload.png\"\r\nContent-Type: image/png\r\n\r\n").encode() + data + (
            f"\r\n--{boundary}--\r\n").encode()  # fmt: skip
    return query, {"Content-Type": f"multipart/form-data; boundary={boundary}"}, body


def _check_answer(status: int, content_type: str, body: bytes) -> None:
    """200 with a prediction, or a documented 4xx with its code, always JSON."""
    assert content_type.startswith("application/json"), (status, content_type, body[:200])
    payload = json.loads(body)
    if status == 200:
        assert isinstance(payload["text"], str) and payload["characters"], payload
        return
    assert status in EXPECTED_CODES, (status, payload)
    assert payload["error"]["code"] in EXPECTED_CODES[status], (status, payload)
    assert payload["error"]["message"]


@pytest.fixture(scope="module")
def client(make_client):
    return make_client()


def _post(client, query: str, headers: dict[str, str], body: bytes) -> float:
    t0 = time.perf_counter()
    response = client.post("/v1/predict" + query, data=body, headers=headers)
    elapsed = time.perf_counter() - t0
    _check_answer(response.status_code, response.content_type, response.data)
    return elapsed


@pytest.mark.parametrize("name", sorted(seed_corpus()))
def test_seed_corpus_through_the_preprocessor(name):
    data = seed_corpus()[name]
    for scheme in ("mnist", "optdigits"):
        try:
            out = preprocess_bytes(data, scheme)
        except ImageError:
            continue
        assert out.shape in ((28, 28), (8, 8)) and float(out.min()) >= 0 and float(out.max()) <= 1


@pytest.mark.parametrize("name", sorted(seed_corpus()))
def test_seed_corpus_through_the_api(client, name):
    data = seed_corpus()[name]
    assert _post(client, "", {"Content-Type": "image/png"}, data) < MAX_CASE_SECONDS
    b64 = json.dumps({"image": base64.b64encode(data).decode()}).encode()
    _post(client, "?segment=multi", {"Content-Type": "application/json"}, b64)


@pytest.mark.parametrize(
    "name", ["png_huge_header", "png_bomb_warning_range", "jpeg_huge_header", "gif_huge_screen",
             "bmp_huge_header"],
)  # fmt: skip
def test_huge_dimension_headers_are_too_large(name):
    with pytest.raises(ImageTooLargeError):
        preprocess_bytes(seed_corpus()[name], "mnist")


@pytest.mark.parametrize("name", ["tiff_named_png", "ico", "pdf", "eps", "psd", "svg"])
def test_other_formats_are_refused_by_content(client, name):
    with pytest.raises(UnsupportedImageError):
        preprocess_bytes(seed_corpus()[name], "mnist")
    upload = (io.BytesIO(seed_corpus()[name]), "digit.png", "image/png")
    response = client.post("/v1/predict", data={"image": upload})
    assert response.status_code == 415
    assert response.get_json()["error"]["code"] == "unsupported_media_type"


@pytest.mark.parametrize("fmt", ["PPM", "PCX", "SGI", "DDS", "ICNS", "XBM", "MSP"])
def test_every_format_pillow_recognises_but_we_refuse_is_415(fmt):
    mode = "1" if fmt in ("XBM", "MSP") else "RGB"
    buf = io.BytesIO()
    Image.new(mode, (40, 40), 255).save(buf, format=fmt)
    with pytest.raises(UnsupportedImageError):
        preprocess_bytes(buf.getvalue(), "mnist")


def test_a_long_one_pixel_line_is_analysed_quickly(small_model_path):
    width = 300_000
    strip = Image.new("L", (width, 1), 255)
    ImageDraw.Draw(strip).line([(width // 10, 0), (width * 9 // 10, 0)], fill=0)
    buf = io.BytesIO()
    strip.save(buf, "PNG")
    predictor = Predictor.from_path(small_model_path)
    t0 = time.perf_counter()
    with contextlib.suppress(ImageError):
        predictor.predict_bytes(buf.getvalue())
    # was 2.3 s (and ~30 s, gunicorn's worker timeout, for a 1,000,000x1 strip); now ~0.07 s
    assert time.perf_counter() - t0 < 1.0


@_fuzz(300)
@given(data=fuzz_inputs(), scheme=st.sampled_from(["mnist", "optdigits"]))
def test_fuzz_preprocessor_raises_only_image_errors(data, scheme):
    with contextlib.suppress(ImageError):
        preprocess_bytes(data, scheme)


def _fuzz_in_process(client, n: int) -> tuple[int, float]:
    seen = []

    @_fuzz(n)
    @given(request=requests_())
    def run(request):
        seen.append(_post(client, *request))

    run()
    return len(seen), max(seen)


def test_fuzz_predict_in_process_small(client):
    count, slowest = _fuzz_in_process(client, 200)
    assert count >= 200 and slowest < MAX_CASE_SECONDS


@pytest.mark.slow
def test_fuzz_predict_in_process_volume(client):
    t0 = time.perf_counter()
    count, slowest = _fuzz_in_process(client, SLOW_CASES)
    print(f"\nfuzz in process: {count} cases in {time.perf_counter() - t0:.1f} s, "
          f"0 errors, slowest case {slowest * 1000:.0f} ms")  # fmt: skip
    assert count >= SLOW_CASES
    assert slowest < MAX_CASE_SECONDS


@pytest.mark.slow
@pytest.mark.e2e
def test_fuzz_against_gunicorn_kills_no_worker(small_model_path, tmp_path):
    with running_server(small_model_path, tmp_path) as server:
        workers = server.worker_pids()
        address = urlsplit(server.url)
        conn = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
        statuses: dict[int, int] = {}

        @_fuzz(GUNICORN_CASES)
        @given(request=requests_())
        def run(request):
            nonlocal conn
            query, headers, body = request
            conn.request("POST", "/v1/predict" + query, body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            statuses[response.status] = statuses.get(response.status, 0) + 1
            _check_answer(response.status, response.getheader("Content-Type", ""), payload)
            if response.will_close:
                conn.close()
                conn = http.client.HTTPConnection(address.hostname, address.port, timeout=10)

        run()
        conn.close()
        print(f"\nfuzz through gunicorn: {sum(statuses.values())} cases, statuses {statuses}")
        assert sum(statuses.values()) >= GUNICORN_CASES
        assert server.worker_pids() == workers
        log = server.log()
        assert "Traceback" not in log and "WORKER TIMEOUT" not in log, log[-3000:]


# --- POST /v1/feedback -----------------------------------------------------------------------

#: what a correction may answer besides 201: every upload error, and its own refusals
FEEDBACK_CODES = {**EXPECTED_CODES,
                  422: EXPECTED_CODES[422] | {"count_mismatch", "unknown_label"}}  # fmt: skip


@st.composite
def feedback_requests(draw) -> tuple[str, dict[str, str], bytes]:
    """(query, headers, body) of one ``POST /v1/feedback``: a fuzzed upload and text."""
    data = draw(fuzz_inputs())
    text = draw(st.one_of(st.sampled_from(["1", "0", "10", "7 7", ""]), st.text(max_size=4),
                          st.integers(0, 99), st.none()))  # fmt: skip
    user = draw(st.sampled_from([None, "ann", "", "../../etc", "x" * 80]))
    fields = {k: v for k, v in (("text", text), ("user", user)) if v is not None}
    form = draw(st.sampled_from(["raw", "multipart", "json"]))
    if form == "json":
        body = json.dumps({"image": base64.b64encode(data).decode(), **fields}).encode()
        return "", {"Content-Type": "application/json"}, body
    if form == "raw":
        query = "&".join(f"{k}={quote(str(v))}" for k, v in fields.items())
        return "?" + query, {"Content-Type": draw(st.sampled_from(_CONTENT_TYPES))}, data
    boundary = "fuzzboundary7MA4YWxkTrZu0gW"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
             .encode() for k, v in fields.items()]  # fmt: skip
    body = b"".join(parts) + (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
                              'filename="u.png"\r\nContent-Type: image/png\r\n\r\n').encode()
    body += data + f"\r\n--{boundary}--\r\n".encode()
    return "", {"Content-Type": f"multipart/form-data; boundary={boundary}"}, body


def _check_feedback(status: int, content_type: str, body: bytes) -> None:
    """201 with what was stored, or a documented 4xx with its code, always JSON."""
    assert content_type.startswith("application/json"), (status, content_type, body[:200])
    payload = json.loads(body)
    if status == 201:
        assert payload["stored"] and isinstance(payload["text"], str), payload
        return
    assert status in FEEDBACK_CODES, (status, payload)
    assert payload["error"]["code"] in FEEDBACK_CODES[status], (status, payload)
    assert payload["error"]["message"]


def _files(root) -> int:
    """Files of the store (its lock and tally aside)."""
    return sum(1 for p in root.rglob("*") if p.is_file() and p.name not in (".lock", ".usage"))


def test_fuzz_feedback_in_process_refusals_write_nothing(small_model_path, tmp_path):
    store = tmp_path / "feedback"
    client = create_app({"model_path": small_model_path, "feedback_dir": str(store)}
                        ).test_client()  # fmt: skip
    statuses: dict[int, int] = {}

    @_fuzz(300)
    @given(request=feedback_requests())
    def run(request):
        query, headers, body = request
        before = _files(store)
        response = client.post("/v1/feedback" + query, data=body, headers=headers)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        _check_feedback(response.status_code, response.content_type, response.data)
        if response.status_code == 201:
            assert _files(store) == before + 3 * len(response.get_json()["stored"])
        else:
            assert _files(store) == before

    run()
    assert sum(statuses.values()) >= 300 and statuses.get(201), statuses


@pytest.mark.slow
@pytest.mark.e2e
def test_fuzz_feedback_against_gunicorn_kills_no_worker(small_model_path, tmp_path):
    env = {"OCR_FEEDBACK_DIR": str(tmp_path / "feedback"), "OCR_FEEDBACK_MAX_MB": "1"}
    with running_server(small_model_path, tmp_path, env=env) as server:
        workers = server.worker_pids()
        address = urlsplit(server.url)
        statuses: dict[int, int] = {}

        @_fuzz(GUNICORN_CASES // 3)
        @given(request=feedback_requests())
        def run(request):
            query, headers, body = request
            conn = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
            conn.request("POST", "/v1/feedback" + query, body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            conn.close()
            statuses[response.status] = statuses.get(response.status, 0) + 1
            if response.status == 507:  # the 1 MB cap filled up: a documented refusal
                assert json.loads(payload)["error"]["code"] == "feedback_store_full"
                return
            _check_feedback(response.status, response.getheader("Content-Type", ""), payload)

        run()
        print(f"\nfeedback fuzz through gunicorn: statuses {statuses}")
        assert server.worker_pids() == workers
        assert sum(1 for _ in (tmp_path / "feedback").rglob("*")) > 0
        log = server.log()
        assert "Traceback" not in log and "WORKER TIMEOUT" not in log, log[-3000:]
