"""/openapi.json is a valid OpenAPI 3.1 document and describes the real responses."""

import base64
import io

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from ocr_service.app import create_app
from ocr_testing.server_utils import copy_model, digit_png

PNG = digit_png("0")
TOKEN = "docs-token"
RAW = {"data": PNG, "content_type": "image/png"}


@pytest.fixture(scope="module")
def client(make_client):
    return make_client(admin_token=TOKEN)


@pytest.fixture(scope="module")
def spec(client):
    return client.get("/openapi.json").get_json()


def test_document_is_valid_openapi(spec):
    validate(spec)
    assert spec["openapi"].startswith("3.1")


def test_every_route_of_the_app_is_documented(client, spec):
    app_routes = {
        rule.rule for rule in client.application.url_map.iter_rules() if rule.endpoint != "static"
    }
    assert app_routes == set(spec["paths"])


def _check(spec, response, path: str, method: str) -> None:
    """The response's status is documented for the operation and its JSON body matches."""
    documented = spec["paths"][path][method]["responses"]
    status = str(response.status_code)
    assert status in documented, f"{method.upper()} {path} -> undocumented {status}"
    content = documented[status]["content"]
    if response.mimetype != "application/json":
        assert response.mimetype in content
        return
    schema = {"components": spec["components"], **content["application/json"]["schema"]}
    Draft202012Validator(schema).validate(response.get_json())


def test_predict_responses_match_the_schema(client, spec):
    b64 = base64.b64encode(PNG).decode()
    for response in (
        client.post("/v1/predict?top_k=5&include_input=1", **RAW),
        client.post("/v1/predict", data={"image": (io.BytesIO(PNG), "a.png"), "top_k": "2"}),
        client.post("/v1/predict", json={"image": b64}),
        client.post("/v1/predict?top_k=0", **RAW),
        client.post("/v1/predict", data=b"junk", content_type="image/png"),
        client.post("/v1/predict", data=digit_png("blank"), content_type="image/png"),
        client.post("/v1/predict", data=b"x", content_type="text/plain"),
    ):
        _check(spec, response, "/v1/predict", "post")


def test_batch_responses_match_the_schema(client, spec):
    parts = {"image": [(io.BytesIO(PNG), "a.png"), (io.BytesIO(b"bad"), "b.png")]}
    response = client.post("/v1/predict/batch", data=parts)
    assert response.status_code == 200
    _check(spec, response, "/v1/predict/batch", "post")
    _check(spec, client.post("/v1/predict/batch", **RAW), "/v1/predict/batch", "post")


def test_other_operations_match_the_schema(client, spec):
    for path in ("/v1/model", "/healthz", "/readyz", "/metrics", "/openapi.json", "/"):
        _check(spec, client.get(path), path, "get")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {TOKEN}"}):
        response = client.post("/v1/admin/reload", headers=headers)
        _check(spec, response, "/v1/admin/reload", "post")


def test_unready_responses_match_the_schema(tmp_path, spec):
    client = create_app({"model_path": str(tmp_path / "none")}).test_client()
    _check(spec, client.get("/readyz"), "/readyz", "get")
    _check(spec, client.get("/v1/model"), "/v1/model", "get")
    _check(spec, client.post("/v1/predict", **RAW), "/v1/predict", "post")
    _check(spec, client.post("/v1/admin/reload"), "/v1/admin/reload", "post")


def test_limits_in_the_document_follow_the_settings(small_model_path):
    client = create_app({"model_path": small_model_path, "max_batch": 7}).test_client()
    spec = client.get("/openapi.json").get_json()
    body = spec["paths"]["/v1/predict/batch"]["post"]["requestBody"]
    schema = body["content"]["multipart/form-data"]["schema"]
    assert "at most 7 images" in schema["properties"]["image"]["description"]


def test_feedback_responses_match_the_schema(small_model_path, tmp_path, spec):
    on = create_app({"model_path": small_model_path, "feedback_dir": str(tmp_path / "f"),
                     "feedback_max_mb": 1}).test_client()  # fmt: skip
    off = create_app({"model_path": small_model_path}).test_client()
    b64 = base64.b64encode(PNG).decode()
    responses = [
        on.post("/v1/feedback?text=6", **RAW),
        on.post("/v1/feedback", json={"image": b64, "text": "66"}),
        on.post("/v1/feedback", json={"image": b64, "text": "z"}),
        on.post("/v1/feedback", data={"image": (io.BytesIO(PNG), "a.png")}),
        off.post("/v1/feedback?text=6", **RAW),
    ]
    assert [r.status_code for r in responses] == [201, 422, 422, 400, 404]
    for response in responses:
        _check(spec, response, "/v1/feedback", "post")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "big").write_bytes(b"\0" * 1024 * 1024)
    full = create_app({"model_path": small_model_path, "feedback_dir": str(tmp_path / "full"),
                       "feedback_max_mb": 1}).test_client().post("/v1/feedback?text=6", **RAW)
    assert full.status_code == 507
    _check(spec, full, "/v1/feedback", "post")
    for client in (on, off):
        _check(spec, client.get("/v1/feedback"), "/v1/feedback", "get")


def test_the_document_follows_a_model_loaded_after_start(tmp_path, small_model_path):
    path = tmp_path / "model"
    client = create_app({"model_path": str(path), "admin_token": TOKEN}).test_client()

    def top_k_schema():
        parameters = client.get("/openapi.json").get_json()["paths"]["/v1/predict"]["post"][
            "parameters"]
        return next(p["schema"] for p in parameters if p["name"] == "top_k")

    assert "maximum" not in top_k_schema()  # no model yet: no class count to cap top_k
    copy_model(small_model_path, path)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.post("/v1/admin/reload", headers=auth).status_code == 200
    assert top_k_schema()["maximum"] == 10
