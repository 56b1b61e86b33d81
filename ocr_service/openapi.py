"""The OpenAPI 3.1 document served at ``/openapi.json``; tests check real responses against it."""

from __future__ import annotations

import copy
from typing import Any

from . import __version__
from . import options as reading
from .config import Settings
from .features import FEATURES
from .nn import NETWORK_KINDS

__all__ = ["build_spec"]

_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": _ref("Error")}}}


def _ok(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": _ref(schema)}}}


_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "examples": ["no_ink"]},
                    "message": {"type": "string"},
                },
            }
        },
    },
    "ModelRef": {
        "type": "object",
        "required": ["name", "version"],
        "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
    },
    "Character": {
        "type": "object",
        "required": ["char", "confidence", "box", "top"],
        "properties": {
            "char": {"type": "string", "description": "the class, or '?' when rejected"},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "box": {
                "type": "array",
                "description": "[x, y, width, height] in the uploaded image's pixels",
                "items": {"type": "integer"},
                "minItems": 4,
                "maxItems": 4,
            },
            "top": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["char", "p"],
                    "properties": {
                        "char": {"type": "string"},
                        "p": {"type": "number", "minimum": 0, "maximum": 1},
                    },
                },
            },
            "input": {
                "type": "array",
                "description": "with include_input=1: the normalised character image the "
                "model's inputs are computed from (rows of ink 0..1)",
                "items": {"type": "array", "items": {"type": "number"}},
            },
        },
    },
    "Recognition": {
        "type": "object",
        "required": ["text", "characters"],
        "properties": {
            "text": {"type": "string"},
            "characters": {"type": "array", "items": _ref("Character")},
        },
    },
    "Prediction": {
        "allOf": [
            _ref("Recognition"),
            {
                "type": "object",
                "required": ["model", "elapsed_ms"],
                "properties": {
                    "model": _ref("ModelRef"),
                    "elapsed_ms": {"type": "number", "minimum": 0},
                },
            },
        ]
    },
    "BatchPrediction": {
        "type": "object",
        "required": ["results", "model", "elapsed_ms"],
        "properties": {
            "results": {
                "type": "array",
                "description": "one entry per image part, in order",
                "items": {"oneOf": [_ref("Recognition"), _ref("Error")]},
            },
            "model": _ref("ModelRef"),
            "elapsed_ms": {"type": "number", "minimum": 0},
        },
    },
    "ReloadRecord": {
        "type": ["object", "null"],
        "description": "the last model load attempt of the answering process",
        "required": ["ok", "at"],
        "properties": {
            "ok": {"type": "boolean"},
            "at": {"type": "string", "format": "date-time"},
            "version": {"type": "string"},
            "error": {"type": "string"},
        },
    },
    "ModelInfo": {
        "type": "object",
        "required": ["name", "version", "kind", "classes", "input", "metrics", "last_reload"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "kind": {"type": "string", "enum": list(NETWORK_KINDS)},
            "classes": {"type": "array", "items": {"type": "string"}},
            "non_character": {
                "type": "boolean",
                "description": "the network has a non-character output (never an answer; it "
                "steers where touching characters are cut)",
            },
            "input": {
                "type": "object",
                "required": ["height", "width", "scheme"],
                "properties": {
                    "height": {"type": "integer"},
                    "width": {"type": "integer"},
                    "scheme": {"type": "string"},
                    "features": {
                        "type": "string",
                        "enum": list(FEATURES),
                        "description": "what the network reads of the normalised image "
                        "(absent in models made before the field: pixels)",
                    },
                },
            },
            "metrics": {"type": "object"},
            "calibration": {"type": "object"},
            "training": {"type": "object", "description": "training summary (no weights)"},
            "created": {"type": ["string", "null"]},
            "sha256": {"type": ["string", "null"]},
            "last_reload": _ref("ReloadRecord"),
        },
    },
    "Ready": {
        "type": "object",
        "required": ["status", "model", "last_reload"],
        "properties": {
            "status": {"const": "ready"},
            "model": _ref("ModelRef"),
            "last_reload": _ref("ReloadRecord"),
        },
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"const": "ok"}},
    },
    "FeedbackStored": {
        "type": "object",
        "required": ["stored", "text", "model"],
        "properties": {
            "stored": {
                "type": "array",
                "description": "one entry per character, in reading order",
                "items": {
                    "type": "object",
                    "required": ["id", "label", "read", "box"],
                    "properties": {
                        "id": {"type": "string", "description": "server-chosen name"},
                        "label": {"type": "string", "description": "the true class"},
                        "read": {"type": "string", "description": "what the model read"},
                        "box": {"type": "array", "items": {"type": "integer"},
                                "minItems": 4, "maxItems": 4},
                    },
                },
            },
            "text": {"type": "string", "description": "the served model's reading"},
            "model": _ref("ModelRef"),
        },
    },
    "FeedbackInfo": {
        "type": "object",
        "required": ["enabled", "classes", "max_bytes"],
        "properties": {
            "enabled": {"const": True},
            "classes": {"type": "array", "items": {"type": "string"}},
            "max_bytes": {"type": "integer", "description": "size cap of the store"},
        },
    },
    "Reloaded": {
        "type": "object",
        "required": ["status", "model", "scope"],
        "properties": {
            "status": {"const": "reloaded"},
            "model": _ref("ModelRef"),
            "scope": {"type": "string", "enum": ["all_workers", "this_process"]},
        },
    },
}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}  # fmt: skip


#: what ``_decode_base64`` accepts: padded base64, optionally as a ``data:<type>;base64,`` URL
_BASE64 = (
    r"^(data:[A-Za-z0-9/+.-]*;base64,)?"
    r"([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
)


def _top_k(n_classes: int | None) -> dict[str, Any]:
    """``top_k``'s schema: 1..number of classes of the served model (if one is loaded)."""
    return ({"type": "integer", "minimum": reading.MIN_TOP_K}
            | ({"maximum": n_classes} if n_classes else {}))


def _options(n_classes: int | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The prediction options as query parameters and as body properties."""
    properties = {
        "top_k": _top_k(n_classes),
        "segment": {"type": "string", "enum": list(reading.SEGMENT_MODES)},
        "include_input": {"type": "string", "enum": list(reading.INCLUDE_INPUT_VALUES)},
    }
    parameters = [
        _query("top_k", {**properties["top_k"], "default": reading.DEFAULT_TOP_K},
               "alternatives per character, 1..number of classes"),
        _query("segment", {**properties["segment"], "default": reading.DEFAULT_SEGMENT},
               "single: the whole image is one character; multi: split into characters"),
        _query("include_input",
               {**properties["include_input"], "default": reading.DEFAULT_INCLUDE_INPUT},
               "1: add each character's model input (the normalised image the model saw)"),
    ]  # fmt: skip
    return parameters, properties


def _client_errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "malformed request or image (bad_request, bad_parameter, missing_image, bad_json, "
        "bad_base64, bad_image)",
        401: "missing bearer token",
        403: "wrong bearer token",
        404: "admin routes disabled (no OCR_ADMIN_TOKEN)",
        413: "upload, image pixels or batch too large (too_large)",
        415: "not a supported image type or content type (unsupported_media_type)",
        422: "no ink found in the image (no_ink), or more characters than one upload may hold "
        "(too_many_characters)",
        503: "no model loaded (not_ready)",
    }
    return {str(s): _error(text[s]) for s in statuses}


def _predict_body(option_properties: dict[str, Any]) -> dict[str, Any]:
    """The request body of ``POST /v1/predict``: raw image, multipart or JSON."""
    return {
        "required": True,
        "content": {
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {"type": "string", "format": "binary"},
                        **option_properties,
                    },
                }
            },
            _JSON: {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {
                            "type": "string",
                            "minLength": 1,
                            "pattern": _BASE64,
                            "description": "base64 or a data: URL",
                        },
                        **option_properties,
                    },
                }
            },
        },
    }


#: the fields a correction adds to an upload
_TEXT_FIELDS: dict[str, Any] = {
    "text": {"type": "string", "pattern": r"\S", "maxLength": 1000,
             "description": "what was actually written, one character per character read "
             "(white space is ignored)"},
    "user": {"type": "string", "pattern": r"^[A-Za-z0-9._@-]{1,64}$",
             "description": "optional tag, to find and delete one user's corrections"},
}


def _feedback(
    predict_body: dict[str, Any], parameters: list[dict[str, Any]],
    option_properties: dict[str, Any],
) -> dict[str, Any]:
    """The ``/v1/feedback`` path: an upload as for predict, with its true text."""
    feedback_body = {"required": True, "content": {
        kind: {"schema": {**body["schema"], "properties": {
            "image": body["schema"]["properties"]["image"],
            "segment": option_properties["segment"], **_TEXT_FIELDS}}}
        if kind != "image/*" else body
        for kind, body in predict_body["content"].items()}}  # fmt: skip
    feedback_parameters = [
        *(p for p in parameters if p["name"] == "segment"),
        _query("text", _TEXT_FIELDS["text"], "the true text (or as a body field)"),
        _query("user", _TEXT_FIELDS["user"], "optional user tag (or as a body field)"),
    ]
    feedback_off = _error("corrections are off: OCR_FEEDBACK_DIR is not set (not_found)")
    return {
        "post": {
            "summary": "Correct a reading: its characters become training data",
            "operationId": "feedback",
            "parameters": feedback_parameters,
            "requestBody": feedback_body,
            "responses": {
                "201": _ok("every character stored", "FeedbackStored"),
                **_client_errors(400, 413, 415),
                "404": feedback_off,
                "422": _error(
                    "no ink or too many characters, a character of text outside the "
                    "model's classes (unknown_label), or another number of characters "
                    "than the model read (count_mismatch)"
                ),
                "503": _error("no model loaded (not_ready), or the store cannot be "
                              "written (feedback_unavailable)"),
                "507": _error("the store is full (feedback_store_full)"),
            },
        },
        "get": {
            "summary": "Whether corrections are accepted, and for which classes",
            "operationId": "feedbackInfo",
            "responses": {
                "200": _ok("corrections are on", "FeedbackInfo"),
                "404": feedback_off,
                **_client_errors(503),
            },
        },
    }


def _batch_body(settings: Settings, option_properties: dict[str, Any]) -> dict[str, Any]:
    """The request body of ``POST /v1/predict/batch``: multipart images up to the limit."""
    return {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "minItems": 1,
                            "maxItems": settings.max_batch,
                            "description": f"at most {settings.max_batch} images (413 beyond)",
                        },
                        **option_properties,
                    },
                }
            }
        },
    }


#: the routes that take no options: model, admin, health, metrics, this document, the page
_OTHER_PATHS: dict[str, Any] = {
    "/v1/model": {
        "get": {
            "summary": "Metadata of the served model",
            "operationId": "model",
            "responses": {
                "200": _ok("model metadata", "ModelInfo"),
                **_client_errors(503),
            },
        }
    },
    "/v1/admin/reload": {
        "post": {
            "summary": "Reload the model from disk (all workers)",
            "operationId": "reload",
            "security": [{"bearer": []}],
            "responses": {
                "200": _ok("the new model serves", "Reloaded"),
                "422": _error(
                    "the artifact is invalid; the old model keeps serving (reload_failed)"
                ),
                **_client_errors(401, 403, 404),
            },
        }
    },
    "/healthz": {
        "get": {
            "summary": "The process is alive",
            "operationId": "healthz",
            "responses": {"200": _ok("alive", "Health")},
        }
    },
    "/readyz": {
        "get": {
            "summary": "A model is loaded and serving",
            "operationId": "readyz",
            "responses": {"200": _ok("ready", "Ready"), **_client_errors(503)},
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics of all workers",
            "operationId": "metrics",
            "responses": {
                "200": {
                    "description": "Prometheus text exposition format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "operationId": "openapi",
            "responses": {
                "200": {
                    "description": "OpenAPI 3.1",
                    "content": {_JSON: {"schema": {"type": "object"}}},
                }
            },
        }
    },
    "/": {
        "get": {
            "summary": "The drawing page",
            "operationId": "index",
            "responses": {
                "200": {
                    "description": "HTML page",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                }
            },
        }
    },
}


def build_spec(settings: Settings, n_classes: int | None = None) -> dict[str, Any]:
    """The OpenAPI document, with the configured limits and the served model's class count."""
    parameters, option_properties = _options(n_classes)
    predict_body = _predict_body(option_properties)
    batch_body = _batch_body(settings, option_properties)
    limits = (
        f"Uploads are limited to {settings.max_upload_bytes} bytes and "
        f"{settings.max_pixels} pixels."
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Handwriting OCR service",
            "version": __version__,
            "description": "Recognise handwritten characters with a numpy backprop network. "
            + limits,
        },
        "paths": {
            "/v1/predict": {
                "post": {
                    "summary": "Recognise the characters in one image",
                    "operationId": "predict",
                    "parameters": parameters,
                    "requestBody": predict_body,
                    "responses": {
                        "200": _ok("recognised text and per-character details", "Prediction"),
                        **_client_errors(400, 413, 415, 422, 503),
                    },
                }
            },
            "/v1/predict/batch": {
                "post": {
                    "summary": f"Recognise up to {settings.max_batch} images, in order",
                    "operationId": "predictBatch",
                    "parameters": parameters,
                    "requestBody": batch_body,
                    "responses": {
                        "200": _ok("one result or error per image", "BatchPrediction"),
                        **_client_errors(400, 413, 415, 503),
                    },
                }
            },
            "/v1/feedback": _feedback(predict_body, parameters, option_properties),
            **copy.deepcopy(_OTHER_PATHS),
        },
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
