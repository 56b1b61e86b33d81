"""The app factory: settings, model loading, limits and the one JSON error handler."""

import io
import shutil
import tempfile

import pytest

from ocr_service import model_holder
from ocr_service.app import create_app
from ocr_service.config import Settings
from ocr_testing.server_utils import digit_png


def _app(model_path, **overrides):
    return create_app({"model_path": str(model_path), **overrides})


def test_settings_object_and_override_mapping_both_configure_the_app(small_model_path):
    app = create_app(Settings(model_path=small_model_path, max_upload_bytes=1234))
    assert app.config["MAX_CONTENT_LENGTH"] == 1234
    app = _app(small_model_path, max_batch=3)
    assert app.extensions["ocr"].settings.max_batch == 3
    assert app.config["MAX_FORM_PARTS"] > 3


def test_model_is_loaded_once_at_creation_not_per_request(small_model_path, monkeypatch):
    app = _app(small_model_path)
    calls = []
    monkeypatch.setattr(model_holder, "load_model", lambda p: calls.append(p))
    client = app.test_client()
    for _ in range(3):
        response = client.post("/v1/predict", data=digit_png(), content_type="image/png")
        assert response.status_code == 200
    assert calls == []


def test_without_a_model_the_app_is_alive_but_not_ready(tmp_path):
    client = _app(tmp_path / "missing").test_client()
    assert client.get("/healthz").status_code == 200
    for response in (
        client.get("/readyz"),
        client.post("/v1/predict", data=digit_png(), content_type="image/png"),
        client.get("/v1/model"),
    ):
        assert response.status_code == 503
        assert response.get_json()["error"]["code"] == "not_ready"
        assert "missing" in response.get_json()["error"]["message"]


def test_a_model_that_appears_later_is_picked_up(tmp_path, small_model_path, monkeypatch):
    monkeypatch.setattr(model_holder, "_RETRY_INTERVAL", 0.0)
    target = tmp_path / "late"
    client = _app(target).test_client()
    assert client.get("/readyz").status_code == 503
    for suffix in (".npz", ".json"):
        shutil.copy(small_model_path + suffix, str(target) + suffix)
    assert client.get("/readyz").status_code == 200


def test_errors_are_json_never_html(small_model_path):
    client = _app(small_model_path).test_client()
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert response.mimetype == "application/json"
    assert response.get_json()["error"]["code"] == "not_found"
    response = client.delete("/v1/predict")
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]
    assert response.get_json()["error"]["code"] == "method_not_allowed"


def test_body_over_the_upload_limit_is_413(small_model_path):
    client = _app(small_model_path, max_upload_bytes=1000).test_client()
    response = client.post("/v1/predict", data=b"\x89PNG" + b"0" * 2000, content_type="image/png")
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "too_large"


def test_image_over_the_pixel_limit_is_413(small_model_path):
    client = _app(small_model_path, max_pixels=50 * 50).test_client()
    response = client.post("/v1/predict", data=digit_png(size=96), content_type="image/png")
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "too_large"


def test_a_server_bug_is_a_json_500_without_traceback(small_model_path):
    app = _app(small_model_path)

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internals")

    response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert response.get_json() == {
        "error": {"code": "internal_error", "message": "internal server error"}
    }


def test_multipart_uploads_never_touch_the_disk(small_model_path, monkeypatch):
    def no_disk(*args, **kwargs):
        raise AssertionError("upload spooled to disk")

    monkeypatch.setattr(tempfile, "TemporaryFile", no_disk)
    monkeypatch.setattr(tempfile, "SpooledTemporaryFile", no_disk)
    big = digit_png(size=2000, fmt="BMP")  # ~4 MB, above werkzeug's 500 kB spooling threshold
    client = _app(small_model_path).test_client()
    response = client.post("/v1/predict", data={"image": (io.BytesIO(big), "big.bmp")})
    assert response.status_code == 200, response.get_json()


@pytest.mark.parametrize("path", ["/healthz", "/v1/model", "/metrics", "/openapi.json", "/"])
def test_every_get_route_answers(small_model_path, path):
    assert _app(small_model_path).test_client().get(path).status_code == 200


def test_too_many_multipart_parts_is_413_before_decoding(small_model_path):
    app = _app(small_model_path, max_batch=2)
    fields = {f"field{i}": "x" for i in range(app.extensions["ocr"].settings.max_form_parts + 1)}
    fields["image"] = (io.BytesIO(digit_png()), "a.png")
    response = app.test_client().post("/v1/predict/batch", data=fields)
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "too_large"


def test_a_model_that_fails_on_a_probe_image_is_refused(small_model_path, monkeypatch):
    app = _app(small_model_path, admin_token="t")
    client = app.test_client()

    def broken(self, data, **kwargs):
        raise FloatingPointError("nan in the readout")

    monkeypatch.setattr(model_holder.Predictor, "predict_bytes", broken)
    response = client.post("/v1/admin/reload", headers={"Authorization": "Bearer t"})
    assert response.status_code == 422
    assert "fails on a probe image (FloatingPointError" in response.get_json()["error"]["message"]
    monkeypatch.undo()
    assert client.post("/v1/predict", data=digit_png(), content_type="image/png").status_code == 200


def test_a_large_non_file_form_field_is_413(small_model_path):
    client = _app(small_model_path).test_client()
    fields = {"image": (io.BytesIO(digit_png()), "a.png"), "top_k": "1" * 600_000}
    response = client.post("/v1/predict", data=fields)
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "too_large"


def test_made_up_methods_do_not_create_metric_series(small_model_path):
    client = _app(small_model_path).test_client()
    for method in ("XYZ1", "XYZ2", "PROPFIND"):
        assert client.open("/v1/predict", method=method).status_code == 405
    text = client.get("/metrics").get_data(as_text=True)
    assert "XYZ" not in text and "PROPFIND" not in text
    line = 'ocr_http_requests_total{method="other",route="unmatched",status="405"} 3.0'
    assert line in text.splitlines()
