"""HTTP routes: the ``/v1`` API and the operational endpoints (health, metrics, docs, page).

Request forms of ``POST /v1/predict``, fastest first: the raw body with an ``image/*``
content type (no form parsing), multipart field ``image``, JSON ``{"image": base64 or
data URL}``. Options come from the query string, or from the form/JSON body.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import json
from collections.abc import Mapping
from time import perf_counter
from typing import Any

from flask import Blueprint, Response, current_app, render_template, request
from werkzeug.datastructures import MultiDict

from .config import Settings
from .errors import ApiError, error_body
from .feedback import FeedbackStore, corrections_for, parse_labels, parse_user
from .image_errors import ImageError
from .model_holder import ReloadError
from .multipart import split_form
from .openapi import build_spec
from .options import (
    DEFAULT_INCLUDE_INPUT,
    DEFAULT_SEGMENT,
    DEFAULT_TOP_K,
    INCLUDE_INPUT_VALUES,
    MIN_TOP_K,
    SEGMENT_MODES,
)
from .predictor import PredictionResult, Predictor
from .service import Service

__all__ = ["ops", "v1"]

v1 = Blueprint("v1", __name__, url_prefix="/v1")
ops = Blueprint("ops", __name__)


def _service() -> Service:
    return current_app.extensions["ocr"]


def _model_ref(predictor: Predictor) -> dict[str, str]:
    return {"name": predictor.artifact.name, "version": predictor.artifact.version}


def _options(source: Mapping[str, Any], n_classes: int) -> tuple[int, str, bool]:
    """``top_k`` (MIN_TOP_K..n_classes), ``segment`` and ``include_input`` from a request's
    fields."""
    raw_k = source.get("top_k", min(DEFAULT_TOP_K, n_classes))
    try:
        # JSON true and 2.5 are not counts; 5.0 is (JSON Schema's integers include it)
        if isinstance(raw_k, bool) or (isinstance(raw_k, float) and not raw_k.is_integer()):
            raise ValueError
        top_k = int(raw_k)
    except (TypeError, ValueError):
        raise ApiError(400, "bad_parameter", f"top_k must be an integer, got {raw_k!r}") from None
    if not MIN_TOP_K <= top_k <= n_classes:
        raise ApiError(400, "bad_parameter",
                       f"top_k must be in {MIN_TOP_K}..{n_classes}, got {top_k}")
    segment = source.get("segment", DEFAULT_SEGMENT)
    if segment not in SEGMENT_MODES:
        choices = ", ".join(SEGMENT_MODES)
        raise ApiError(400, "bad_parameter", f"segment must be one of {choices}, got {segment!r}")
    flag = source.get("include_input", DEFAULT_INCLUDE_INPUT)
    if flag not in INCLUDE_INPUT_VALUES:  # exactly the documented strings, in every form
        choices = " or ".join(f'"{v}"' for v in INCLUDE_INPUT_VALUES)
        raise ApiError(400, "bad_parameter", f"include_input must be {choices}, got {flag!r}")
    return top_k, segment, flag == INCLUDE_INPUT_VALUES[1]


def _decode_base64(value: Any) -> bytes:
    """Bytes of a base64 string or a ``data:<type>;base64,<data>`` URL."""
    if not isinstance(value, str) or not value:
        raise ApiError(400, "missing_image", 'JSON field "image" must be a non-empty string')
    if value.startswith("data:"):
        header, sep, value = value.partition(",")
        if not sep or not header.endswith(";base64"):
            raise ApiError(400, "bad_base64", "data URL must be of the form data:<type>;base64,...")
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "bad_base64", 'JSON field "image" is not valid base64') from None


def _body() -> bytes:
    """The request body (cached for ``get_json``); 413 when a streamed body hits the limit.

    werkzeug reads a body without Content-Length (chunked) up to MAX_CONTENT_LENGTH and stops
    there without an error, so a longer one would arrive silently truncated.
    """
    data = request.get_data()
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is None and limit is not None and len(data) >= limit:
        raise ApiError(413, "too_large", f"request body reaches the {limit}-byte limit")
    return data


def _form() -> tuple[MultiDict[str, str], MultiDict[str, bytes]]:
    """A multipart body's fields and files (bytes), split in memory where it has the plain
    shape (``multipart.py``), else by werkzeug's parser."""
    split = split_form(_body(), request.mimetype_params.get("boundary", ""),
                       max_parts=request.max_form_parts,
                       max_field_bytes=request.max_form_memory_size)
    if split is not None:
        return split
    files = MultiDict((name, upload.stream.read())
                      for name, upload in request.files.items(multi=True))
    return request.form, files


def _json_body() -> dict[str, Any]:
    _body()
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # deeply nested arrays: json raises this, not a ValueError
        body = None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_json", "request body must be a JSON object")
    return body


def _read_single_image() -> tuple[bytes, Mapping[str, Any]]:
    """The uploaded image's bytes and the request body's fields, by content type."""
    mimetype = request.mimetype
    if mimetype.startswith("image/"):
        data = _body()
        if not data:
            raise ApiError(400, "missing_image", "request body is empty")
        return data, {}
    if mimetype == "multipart/form-data":
        fields, files = _form()
        upload = files.get("image")
        if upload is None:
            raise ApiError(400, "missing_image", 'multipart field "image" is missing')
        return upload, fields
    if mimetype == "application/json":
        body = _json_body()
        return _decode_base64(body.get("image")), body
    if not mimetype and not request.content_length:
        raise ApiError(400, "missing_image", "send an image (see /openapi.json)")
    raise ApiError(
        415,
        "unsupported_media_type",
        f"content type {mimetype or 'none'!r} not accepted: send image/*, "
        "multipart/form-data or application/json",
    )


def _all_options(
    query: Mapping[str, Any], body: Mapping[str, Any], n_classes: int
) -> tuple[int, str, bool]:
    """Options from the query string and the body: every given value must be valid, and for
    an option given in both places the query string's value is used."""
    _options(body, n_classes)
    return _options({**{k: body.get(k) for k in body if k != "image"}, **query}, n_classes)


def _record(results: list[PredictionResult]) -> None:
    metrics = _service().metrics
    metrics.count_predictions(c.char for result in results for c in result.characters)
    for result in results:
        iterations = result.stats.get("iterations")
        if iterations is not None:
            metrics.observe_iterations(float(iterations))


@v1.post("/predict")
def predict() -> dict[str, Any]:
    t0 = perf_counter()
    predictor = _service().holder.get()
    data, fields = _read_single_image()
    top_k, segment, include_input = _all_options(
        request.args, fields, len(predictor.artifact.classes)
    )
    result = predictor.predict_bytes(data, top_k=top_k, segment=segment)
    _record([result])
    body = result.to_dict(include_inputs=include_input)
    body["model"] = _model_ref(predictor)
    body["elapsed_ms"] = round((perf_counter() - t0) * 1000.0, 3)
    return body


@v1.post("/predict/batch")
def predict_batch() -> dict[str, Any]:
    t0 = perf_counter()
    service = _service()
    predictor = service.holder.get()
    if request.mimetype != "multipart/form-data":
        raise ApiError(
            415, "unsupported_media_type", 'send the images as multipart/form-data "image" parts'
        )
    fields, files = _form()
    uploads = files.getlist("image")
    if not uploads:
        raise ApiError(400, "missing_image", 'no multipart "image" parts')
    limit = service.settings.max_batch
    if len(uploads) > limit:
        raise ApiError(413, "too_large", f"{len(uploads)} images exceed the batch limit {limit}")
    top_k, segment, include_input = _all_options(
        request.args, fields, len(predictor.artifact.classes)
    )
    outcomes = predictor.predict_many(uploads, top_k=top_k, segment=segment)
    _record([outcome for outcome in outcomes if not isinstance(outcome, ImageError)])
    results = [
        error_body(outcome.code, str(outcome) or outcome.code)
        if isinstance(outcome, ImageError)
        else outcome.to_dict(include_inputs=include_input)
        for outcome in outcomes
    ]
    return {
        "results": results,
        "model": _model_ref(predictor),
        "elapsed_ms": round((perf_counter() - t0) * 1000.0, 3),
    }


def _feedback_store() -> FeedbackStore:
    store = _service().feedback
    if store is None:
        raise ApiError(404, "not_found",
                       "corrections are turned off on this server (OCR_FEEDBACK_DIR is not set)")
    return store


@v1.get("/feedback")
def feedback_info() -> dict[str, Any]:
    store = _feedback_store()
    predictor = _service().holder.get()
    return {"enabled": True, "classes": predictor.artifact.classes, "max_bytes": store.max_bytes}


@v1.post("/feedback")
def feedback() -> tuple[dict[str, Any], int]:
    """Re-read the image with the served model, pair its characters with the true ``text``
    and keep each one as training data (see ``feedback.py``)."""
    service = _service()
    store = _feedback_store()
    predictor = service.holder.get()
    data, fields = _read_single_image()
    _, segment, _ = _all_options(request.args, fields, len(predictor.artifact.classes))
    labels = parse_labels(request.args.get("text", fields.get("text")), predictor.artifact.classes)
    user = parse_user(request.args.get("user", fields.get("user")))
    result = predictor.predict_bytes(data, top_k=1, segment=segment)
    corrections = corrections_for(result, labels, data, max_pixels=predictor.max_pixels)
    model = _model_ref(predictor)
    records = store.add(corrections, model=model, user=user, scheme=predictor.artifact.scheme)
    service.metrics.count_corrections((r["label"], r["read"]) for r in records)
    stored = [{k: r[k] for k in ("id", "label", "read", "box")} for r in records]
    return {"stored": stored, "text": result.text, "model": model}, 201


@v1.get("/model")
def model_info() -> dict[str, Any]:
    holder = _service().holder
    return {**holder.get().artifact.summary(), "last_reload": holder.last_reload}


@v1.post("/admin/reload")
def admin_reload() -> dict[str, Any]:
    service = _service()
    token = service.settings.admin_token
    if not token:
        raise ApiError(404, "not_found", "admin routes are disabled (OCR_ADMIN_TOKEN is not set)")
    header = request.headers.get("Authorization", "")
    if not header:
        raise ApiError(401, "unauthorized", "missing bearer token", {"WWW-Authenticate": "Bearer"})
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        raise ApiError(403, "forbidden", "wrong bearer token")
    try:
        predictor = service.holder.reload()
    except ReloadError as exc:
        raise ApiError(422, "reload_failed", f"{exc}; the previous model keeps serving") from None
    all_workers = service.holder.propagate()
    return {
        "status": "reloaded",
        "model": _model_ref(predictor),
        "scope": "all_workers" if all_workers else "this_process",
    }


@ops.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@ops.get("/readyz")
def readyz() -> dict[str, Any]:
    holder = _service().holder
    predictor = holder.get()
    return {"status": "ready", "model": _model_ref(predictor), "last_reload": holder.last_reload}


@ops.get("/metrics")
def metrics() -> Response:
    body, content_type = _service().metrics.render()
    return Response(body, content_type=content_type)


@ops.get("/openapi.json")
def openapi() -> Response:
    service = _service()
    predictor = service.holder.predictor
    n_classes = len(predictor.artifact.classes) if predictor else None
    return Response(_spec_json(service.settings, n_classes), mimetype="application/json")


@functools.lru_cache(maxsize=8)
def _spec_json(settings: Settings, n_classes: int | None) -> bytes:
    """The OpenAPI document as JSON, built once per settings and class count: it changes
    only with them (a swapped model may have other classes), not per request."""
    return json.dumps(build_spec(settings, n_classes)).encode()


#: the page loads only its own script and style; uploads are previewed from blob: URLs
_PAGE_CSP = "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'"


@ops.get("/")
def index() -> Response:
    response = Response(render_template("index.html"), mimetype="text/html")
    response.headers["Content-Security-Policy"] = _PAGE_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
