"""The /v1 routes and operational endpoints through Flask's test client."""

import base64
import hmac
import io
import json

import pytest

from ocr_service.app import create_app
from ocr_testing.server_utils import digit_png

PNG = digit_png("1")
TOKEN = "t0ken-for-tests"
CLASSES = [str(i) for i in range(10)]


@pytest.fixture
def client(make_client, model_copy):
    return make_client(model_path=str(model_copy), admin_token=TOKEN)


def _assert_prediction(body, top_k=3):
    assert isinstance(body["text"], str) and len(body["text"]) == len(body["characters"]) == 1
    char = body["characters"][0]
    assert char["char"] == body["text"]
    assert char["char"] in (*CLASSES, "?")
    assert 0.0 <= char["confidence"] <= 1.0
    assert len(char["box"]) == 4 and char["box"][2] > 0 and char["box"][3] > 0
    assert len(char["top"]) == top_k
    ps = [t["p"] for t in char["top"]]
    assert ps == sorted(ps, reverse=True)
    assert set(body["model"]) == {"name", "version"}
    assert body["elapsed_ms"] >= 0


def test_raw_image_body(client):
    response = client.post("/v1/predict?top_k=2", data=PNG, content_type="image/png")
    assert response.status_code == 200
    _assert_prediction(response.get_json(), top_k=2)


def test_multipart_field_with_options_in_the_form(client):
    form = {"image": (io.BytesIO(PNG), "digit.png"), "top_k": "4", "segment": "single"}
    response = client.post("/v1/predict", data=form)
    assert response.status_code == 200
    _assert_prediction(response.get_json(), top_k=4)


@pytest.mark.parametrize("prefix", ["", "data:image/png;base64,"])
def test_json_base64_and_data_url(client, prefix):
    payload = {"image": prefix + base64.b64encode(PNG).decode(), "top_k": 1}
    response = client.post("/v1/predict", json=payload)
    assert response.status_code == 200
    _assert_prediction(response.get_json(), top_k=1)


@pytest.mark.parametrize("top_k", [2.5, True, None, "2x"])
def test_json_top_k_must_be_an_integer(client, top_k):
    response = client.post("/v1/predict", json={"image": base64.b64encode(PNG).decode(),
                                                "top_k": top_k})  # fmt: skip
    assert response.status_code == 400
    assert "top_k must be an integer" in response.get_json()["error"]["message"]


def test_an_option_in_query_and_body_must_be_valid_in_both_and_the_query_wins(client):
    def form(top_k):
        return {"image": (io.BytesIO(PNG), "digit.png"), "top_k": top_k}

    body = client.post("/v1/predict?top_k=2", data=form("1")).get_json()
    assert len(body["characters"][0]["top"]) == 2
    for query, field in (("top_k=0", "2"), ("top_k=2", "0")):
        response = client.post(f"/v1/predict?{query}", data=form(field))
        assert response.status_code == 400
        assert "top_k must be in 1..10" in response.get_json()["error"]["message"]
    response = client.post("/v1/predict?segment=single", json={
        "image": base64.b64encode(PNG).decode(), "segment": "diagonal"})  # fmt: skip
    assert response.get_json()["error"]["code"] == "bad_parameter"


def test_all_forms_give_the_same_answer(client):
    raw = client.post("/v1/predict", data=PNG, content_type="image/png").get_json()
    form = client.post("/v1/predict", data={"image": (io.BytesIO(PNG), "a.png")}).get_json()
    js = client.post("/v1/predict", json={"image": base64.b64encode(PNG).decode()}).get_json()
    assert raw["characters"] == form["characters"] == js["characters"]


def test_include_input_returns_the_model_input(client):
    body = client.post("/v1/predict?include_input=1", data=PNG, content_type="image/png").get_json()
    grid = body["characters"][0]["input"]
    shape = client.get("/v1/model").get_json()["input"]
    assert len(grid) == shape["height"] and all(len(row) == shape["width"] for row in grid)
    values = [v for row in grid for v in row]
    assert min(values) >= 0.0 and 0.0 < max(values) <= 1.0
    plain = client.post("/v1/predict", data=PNG, content_type="image/png").get_json()
    assert "input" not in plain["characters"][0]


def test_two_digits_side_by_side_are_two_characters(client):
    from PIL import Image

    one = Image.open(io.BytesIO(digit_png("1")))
    zero = Image.open(io.BytesIO(digit_png("0")))
    pair = Image.new("L", (one.width * 2, one.height), 255)
    pair.paste(one, (0, 0))
    pair.paste(zero, (one.width, 0))
    buf = io.BytesIO()
    pair.save(buf, "PNG")
    body = client.post("/v1/predict?segment=multi", data=buf.getvalue(), content_type="image/png")
    characters = body.get_json()["characters"]
    assert len(characters) == 2
    assert characters[0]["box"][0] < characters[1]["box"][0]


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("top_k=0", "top_k must be in 1..10"),
        ("top_k=11", "top_k must be in 1..10"),
        ("top_k=three", "top_k must be an integer"),
        ("segment=diagonal", "segment must be one of auto, single, multi"),
        ("include_input=maybe", 'include_input must be "0" or "1"'),
        ("include_input=", 'include_input must be "0" or "1"'),
        ("include_input=true", 'include_input must be "0" or "1"'),
    ],
)
def test_bad_options_are_400(client, query, fragment):
    response = client.post(f"/v1/predict?{query}", data=PNG, content_type="image/png")
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "bad_parameter"
    assert fragment in error["message"]


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"data": b"", "content_type": "image/png"}, 400, "missing_image"),
        ({"data": b""}, 400, "missing_image"),
        ({"data": {"file": (io.BytesIO(PNG), "a.png")}}, 400, "missing_image"),
        ({"json": {"picture": "x"}}, 400, "missing_image"),
        ({"data": b"{not json", "content_type": "application/json"}, 400, "bad_json"),
        ({"data": b"[" * 100_000, "content_type": "application/json"}, 400, "bad_json"),
        ({"json": {"image": "@@@not base64@@@"}}, 400, "bad_base64"),
        ({"json": {"image": "data:image/png,plain"}}, 400, "bad_base64"),
        ({"data": b"GIF89a garbage", "content_type": "image/gif"}, 400, "bad_image"),
        ({"data": b"hello", "content_type": "text/plain"}, 415, "unsupported_media_type"),
        ({"data": b"%PDF-1.4\n%", "content_type": "image/png"}, 415, "unsupported_media_type"),
        ({"data": digit_png("blank"), "content_type": "image/png"}, 422, "no_ink"),
    ],
)
def test_client_errors_have_documented_status_and_code(client, kwargs, status, code):
    response = client.post("/v1/predict", **kwargs)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    assert response.get_json()["error"]["code"] == code
    assert response.get_json()["error"]["message"]


def test_batch_keeps_order_and_reports_per_item_errors(client):
    parts = [
        (io.BytesIO(PNG), "a.png"),
        (io.BytesIO(b"not an image"), "b.png"),
        (io.BytesIO(digit_png("blank")), "c.png"),
        (io.BytesIO(digit_png("0")), "d.png"),
    ]
    response = client.post("/v1/predict/batch?top_k=2", data={"image": parts})
    assert response.status_code == 200
    body = response.get_json()
    results = body["results"]
    assert len(results) == 4
    _assert_prediction({**results[0], "model": body["model"], "elapsed_ms": 0}, top_k=2)
    assert results[1]["error"]["code"] == "bad_image"
    assert results[2]["error"]["code"] == "no_ink"
    assert results[3]["characters"]
    single = client.post("/v1/predict?top_k=2", data=PNG, content_type="image/png").get_json()
    assert results[0]["characters"] == single["characters"]


def test_batch_limits_and_forms(model_copy):
    client = create_app({"model_path": str(model_copy), "max_batch": 2}).test_client()
    parts = [(io.BytesIO(PNG), f"{i}.png") for i in range(3)]
    response = client.post("/v1/predict/batch", data={"image": parts})
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "too_large"
    response = client.post("/v1/predict/batch", data={"other": (io.BytesIO(PNG), "a.png")})
    assert response.status_code == 400
    response = client.post("/v1/predict/batch", data=PNG, content_type="image/png")
    assert response.status_code == 415


def test_a_batch_in_a_multipart_shape_werkzeug_parses_is_read_alike(client):
    """A preamble and bare LF line breaks: not split in memory, parsed by werkzeug."""
    head = b'--bb\nContent-Disposition: form-data; name="image"; filename="a.png"\n\n'
    parts = b"".join(head + png + b"\n" for png in (PNG, digit_png("0")))
    body = (b"a preamble\n" + parts
            + b'--bb\nContent-Disposition: form-data; name="top_k"\n\n2\n--bb--\n')
    response = client.post("/v1/predict/batch", data=body,
                           content_type="multipart/form-data; boundary=bb")
    assert response.status_code == 200
    plain = client.post("/v1/predict/batch?top_k=2",
                        data={"image": [(io.BytesIO(PNG), "a.png"),
                                        (io.BytesIO(digit_png("0")), "b.png")]})
    assert response.get_json()["results"] == plain.get_json()["results"]


def test_model_metadata_without_weights(client, model_copy):
    from ocr_service.model_store import load_model

    artifact = load_model(model_copy)
    body = client.get("/v1/model").get_json()
    assert body["classes"] == artifact.classes
    assert body["non_character"] is artifact.non_character
    assert body["kind"] == artifact.kind
    assert body["input"] == artifact.metadata["input"]
    assert body["metrics"]["test_accuracy"] == artifact.metadata["metrics"]["test_accuracy"]
    assert body["training"]["epochs"] == artifact.metadata["training"]["epochs"]
    assert body["version"] and body["sha256"].startswith(body["version"])
    assert body["last_reload"]["ok"] is True
    assert "history" not in body["training"]
    assert "layers" not in body


def test_health_and_readiness(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz").get_json()
    assert ready["status"] == "ready" and ready["model"]["version"]


def test_drawing_page_is_self_contained(client):
    response = client.get("/")
    assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")
    html = response.get_data(as_text=True)
    assert "<canvas" in html
    assert "http://" not in html and "https://" not in html  # no CDN
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in html
        assert client.get(asset).status_code == 200


def _reload(client, token=TOKEN):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.post("/v1/admin/reload", headers=headers)


def test_admin_reload_requires_the_token(client):
    response = _reload(client, token=None)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert _reload(client, token="wrong").status_code == 403
    assert _reload(client, token=TOKEN + "x").status_code == 403
    assert client.post("/v1/admin/reload", headers={"Authorization": TOKEN}).status_code == 403


def test_admin_routes_are_off_without_a_token(model_copy):
    client = create_app({"model_path": str(model_copy), "admin_token": ""}).test_client()
    response = _reload(client, token="anything")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_admin_reload_swaps_in_a_retrained_model(client, model_copy):
    from ocr_service.model_store import load_model, save_model
    from ocr_service.nn import MLP

    old = client.get("/v1/model").get_json()["version"]
    meta = load_model(model_copy).metadata
    n_inputs = meta["input"]["height"] * meta["input"]["width"]
    save_model(model_copy, MLP.build(n_inputs, 10, hidden=(8,), seed=7), {
        "classes": meta["classes"], "input": meta["input"], "name": "retrained",
    })  # fmt: skip
    response = _reload(client)
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "reloaded" and body["scope"] == "this_process"
    assert body["model"]["version"] != old
    assert client.get("/v1/model").get_json()["version"] == body["model"]["version"]
    prediction = client.post("/v1/predict", data=PNG, content_type="image/png").get_json()
    assert prediction["model"] == {"name": "retrained", "version": body["model"]["version"]}


def test_failed_reload_keeps_the_old_model_serving(client, model_copy):
    before = client.get("/v1/model").get_json()["version"]
    npz = model_copy.with_name(model_copy.name + ".npz")
    npz.write_bytes(npz.read_bytes()[:100])  # torn weights: checksum mismatch
    response = _reload(client)
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "reload_failed"
    assert client.post("/v1/predict", data=PNG, content_type="image/png").status_code == 200
    assert client.get("/readyz").status_code == 200
    info = client.get("/v1/model").get_json()
    assert info["version"] == before
    assert info["last_reload"]["ok"] is False and info["last_reload"]["error"]


@pytest.mark.parametrize("breakage", [
    lambda meta: meta.update(calibration="x"),
    lambda meta: meta.update(layers=[1]),
    lambda meta: meta["input"].update(scheme=[]),
    lambda meta: meta.update(training=[]),
])  # fmt: skip
def test_reload_of_a_wrongly_typed_artifact_keeps_the_old_model(client, model_copy, breakage):
    before = client.get("/v1/model").get_json()["version"]
    path = model_copy.with_name(model_copy.name + ".json")
    meta = json.loads(path.read_text())
    breakage(meta)
    path.write_text(json.dumps(meta))
    assert _reload(client).get_json()["error"]["code"] == "reload_failed"
    assert client.get("/v1/model").get_json()["version"] == before
    assert client.post("/v1/predict", data=PNG, content_type="image/png").status_code == 200


def test_any_error_while_reloading_keeps_the_old_model(client, monkeypatch):
    import ocr_service.model_holder as holder

    def engine_bug(path):
        raise RuntimeError("unexpected")

    monkeypatch.setattr(holder, "load_model", engine_bug)
    assert _reload(client).get_json()["error"]["code"] == "reload_failed"
    assert client.post("/v1/predict", data=PNG, content_type="image/png").status_code == 200


def test_metrics_count_requests_and_predictions(client):
    client.post("/v1/predict", data=PNG, content_type="image/png")
    client.post("/v1/predict", data=b"junk", content_type="image/png")
    char = client.post("/v1/predict", data=PNG, content_type="image/png").get_json()["text"]
    text = client.get("/metrics").get_data(as_text=True)
    assert 'ocr_http_requests_total{method="POST",route="/v1/predict",status="200"} 2.0' in text
    assert 'ocr_http_requests_total{method="POST",route="/v1/predict",status="400"} 1.0' in text
    assert f'ocr_predictions_total{{char="{char}"}} 2.0' in text
    assert 'ocr_http_request_duration_seconds_count{route="/v1/predict",status="200"} 2.0' in text
    assert "ocr_model_info{" in text


def test_metrics_count_the_predictions_of_a_batch(client):
    parts = [(io.BytesIO(PNG), "a.png"), (io.BytesIO(b"junk"), "b.png"),
             (io.BytesIO(PNG), "c.png"), (io.BytesIO(digit_png("0")), "d.png")]
    results = client.post("/v1/predict/batch", data={"image": parts}).get_json()["results"]
    counts: dict[str, int] = {}
    for result in results:
        for char in result.get("characters", []):
            counts[char["char"]] = counts.get(char["char"], 0) + 1
    text = client.get("/metrics").get_data(as_text=True)
    for char, count in counts.items():
        assert f'ocr_predictions_total{{char="{char}"}} {count}.0' in text
    assert sum(counts.values()) == 3


def test_recurrent_models_report_fixed_point_iterations(tmp_path, model_copy):
    from ocr_service.model_store import load_model, save_model
    from ocr_service.nn.recurrent import RecurrentNetwork

    meta = load_model(model_copy).metadata
    n_inputs = meta["input"]["height"] * meta["input"]["width"]
    path = tmp_path / "rbp"
    save_model(path, RecurrentNetwork.build(n_inputs, 10, hidden=(16,)),
               {"classes": meta["classes"], "input": meta["input"]})  # fmt: skip
    client = create_app({"model_path": str(path)}).test_client()
    assert client.get("/v1/model").get_json()["kind"] == "rbp"
    for _ in range(2):
        assert client.post("/v1/predict", data=PNG, content_type="image/png").status_code == 200
    text = client.get("/metrics").get_data(as_text=True)
    assert "ocr_fixed_point_iterations_count 2.0" in text
    assert 'ocr_model_info{kind="rbp"' in text


def test_admin_token_is_compared_in_constant_time(client, monkeypatch):
    from ocr_service import api

    calls, real = [], hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(api.hmac, "compare_digest", spy)
    assert _reload(client, token="x" * 3).status_code == 403  # shorter: still no exception
    assert _reload(client, token="é" * 40).status_code == 403  # non-ASCII: compared as bytes
    assert client.post("/v1/admin/reload", headers={"Authorization": f"bearer {TOKEN}"}
                       ).status_code == 200  # fmt: skip
    assert len(calls) == 3 and all(isinstance(b, bytes) for pair in calls for b in pair)


def test_no_client_can_choose_the_model_path(client, model_copy, tmp_path):
    from ocr_testing.server_utils import save_variant

    served = client.get("/v1/model").get_json()["version"]
    other = save_variant(model_copy, tmp_path / "other", "attacker-chosen")
    path = str(tmp_path / "other")
    fields = {"path": path, "model": path, "model_path": path}
    auth = {"Authorization": f"Bearer {TOKEN}"}
    answers = [
        client.post("/v1/admin/reload", query_string=fields, headers=auth),
        client.post("/v1/admin/reload", json=fields, headers=auth),
        client.post("/v1/admin/reload", data=fields, headers=auth),
        client.post("/v1/predict", query_string=fields, data=PNG, content_type="image/png"),
        client.post("/v1/predict", json={"image": base64.b64encode(PNG).decode(), **fields}),
        client.get("/v1/model", query_string=fields),
    ]
    for response in answers:
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert (body.get("model") or body)["version"] == served != other


# --- corrections ----------------------------------------------------------------------------


@pytest.fixture
def feedback_app(model_copy, tmp_path):
    store = tmp_path / "feedback"
    app = create_app({"model_path": str(model_copy), "feedback_dir": str(store),
                      "feedback_max_mb": 1, "max_pixels": 1_000_000})  # fmt: skip
    return app.test_client(), store


def _stored(store) -> list[str]:
    return sorted(str(p.relative_to(store)) for p in store.rglob("*.png")) if store.exists() else []


def test_corrections_are_off_without_a_folder(client):
    for response in (client.get("/v1/feedback"),
                     client.post("/v1/feedback?text=1", data=PNG, content_type="image/png")):
        assert response.status_code == 404
        assert "OCR_FEEDBACK_DIR" in response.get_json()["error"]["message"]


def test_a_correction_in_every_image_form_is_stored_with_the_served_model(feedback_app):
    client, store = feedback_app
    version = client.get("/v1/model").get_json()["version"]
    read = client.post("/v1/predict", data=PNG, content_type="image/png").get_json()["text"]
    b64 = base64.b64encode(PNG).decode()
    responses = [
        client.post("/v1/feedback?text=7", data=PNG, content_type="image/png"),
        client.post("/v1/feedback", data={"image": (io.BytesIO(PNG), "a.png"), "text": "7",
                                          "user": "ann"}),
        client.post("/v1/feedback", json={"image": b64, "text": "7", "segment": "single"}),
    ]
    for response in responses:
        assert response.status_code == 201, response.get_json()
        body = response.get_json()
        assert body["text"] == read and body["model"]["version"] == version
        (entry,) = body["stored"]
        assert entry["label"] == "7" and entry["read"] == read
        record = json.loads((store / "7" / ".records" / f"{entry['id']}.json").read_text())
        assert record["model"]["version"] == version and record["read"] == read
    assert len(_stored(store)) == 6  # model input and crop of each
    assert client.get("/v1/feedback").get_json()["classes"] == CLASSES


def test_corrections_count_in_a_confusion_matrix_metric(feedback_app):
    client, _ = feedback_app
    read = client.post("/v1/feedback?text=7", data=PNG, content_type="image/png").get_json()
    sample = f'ocr_feedback_corrections_total{{read_class="{read["text"]}",true_class="7"}} 1.0'
    assert sample in client.get("/metrics").get_data(as_text=True)


@pytest.mark.parametrize(("kwargs", "status", "code"), [
    ({"query": "?text=11"}, 422, "count_mismatch"),
    ({"query": "?text=x"}, 422, "unknown_label"),
    ({"query": ""}, 400, "bad_parameter"),
    ({"query": "?text=1&user=../../x"}, 400, "bad_parameter"),
    ({"query": "?text=1&segment=zigzag"}, 400, "bad_parameter"),
    ({"query": "?text=1", "data": b"\x89PNG\r\n\x1a\n junk"}, 400, "bad_image"),
    ({"query": "?text=1", "data": digit_png("1", size=1100)}, 413, "too_large"),
    ({"query": "?text=1", "data": digit_png("blank")}, 422, "no_ink"),
    ({"query": "?text=1", "data": b"%PDF-1.4\n"}, 415, "unsupported_media_type"),
])  # fmt: skip
def test_bad_corrections_are_refused_and_nothing_is_written(feedback_app, kwargs, status, code):
    client, store = feedback_app
    data = kwargs.get("data", PNG)
    response = client.post("/v1/feedback" + kwargs["query"], data=data, content_type="image/png")
    assert (response.status_code, response.get_json()["error"]["code"]) == (status, code)
    assert _stored(store) == []


def test_a_full_store_answers_507_and_counts_it(feedback_app):
    client, store = feedback_app
    store.mkdir()
    (store / "filler.bin").write_bytes(b"\0" * (1024 * 1024 - 100))
    response = client.post("/v1/feedback?text=1", data=PNG, content_type="image/png")
    assert response.status_code == 507
    assert response.get_json()["error"]["code"] == "feedback_store_full"
    assert _stored(store) == []
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'ocr_feedback_refused_total{reason="feedback_store_full"} 1.0' in metrics


def test_an_unwritable_store_is_503_not_500(feedback_app):
    client, store = feedback_app
    store.write_text("a file where the folder should be")
    response = client.post("/v1/feedback?text=1", data=PNG, content_type="image/png")
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "feedback_unavailable"
