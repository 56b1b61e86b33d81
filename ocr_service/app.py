"""Flask application factory: settings, limits, the model holder, metrics and error handling.

``create_app`` loads the model once (under gunicorn: once in the master, before the workers
fork, so they share its pages). Every error leaves through ``_json_error`` as
``{"error": {"code", "message"}}`` JSON; nothing a client sends produces a 500 or HTML.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Mapping
from time import perf_counter
from typing import Any

from flask import Flask, Request, Response, request
from werkzeug.exceptions import HTTPException

from .api import ops, v1
from .config import Settings, load_settings
from .errors import ApiError, error_body
from .feedback import FeedbackError, FeedbackStore
from .image_errors import ImageError
from .metrics import Metrics
from .model_holder import ModelHolder, ModelNotReadyError
from .service import Service

__all__ = ["create_app"]

log = logging.getLogger(__name__)

#: werkzeug HTTP status -> our error code
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


class _InMemoryRequest(Request):
    """Multipart uploads stay in memory (bounded by MAX_CONTENT_LENGTH), never on disk.

    ``started`` is when Flask began handling the request (it creates the request first),
    for the latency metric: a ``before_request`` hook would cost every request more.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.started = perf_counter()
        super().__init__(*args, **kwargs)

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> io.BytesIO:
        return io.BytesIO()


def _json_error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    body = json.dumps(error_body(code, message), separators=(",", ":"))
    response = Response(body, status=status, mimetype="application/json")
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def _register_error_handlers(app: Flask, metrics: Metrics) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return _json_error(exc.status, exc.code, exc.message, exc.headers)

    @app.errorhandler(FeedbackError)
    def _feedback_error(exc: FeedbackError):
        metrics.count_feedback_refused(exc.code)
        if exc.__cause__ is not None:  # the server's side: tell the operator why
            log.error("feedback not stored: %s", exc.__cause__)
        return _json_error(exc.status, exc.code, str(exc) or exc.code)

    @app.errorhandler(ModelNotReadyError)
    def _not_ready(exc: ModelNotReadyError):
        return _json_error(503, "not_ready", str(exc))

    @app.errorhandler(ImageError)
    def _image_error(exc: ImageError):
        return _json_error(exc.status, exc.code, str(exc) or exc.code)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        allowed = getattr(exc, "valid_methods", None)
        headers = {"Allow": ", ".join(allowed)} if allowed else {}
        code = _HTTP_CODES.get(status, "bad_request" if status < 500 else "internal_error")
        return _json_error(status, code, exc.description or exc.name, headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _json_error(500, "internal_error", "internal server error")


#: methods counted under their own name; any other (clients may invent them) is "other",
#: so a client cannot grow the metrics by one time series per made-up method
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


def _register_metrics_hooks(app: Flask, metrics: Metrics) -> None:
    @app.after_request
    def _observe(response: Response) -> Response:
        # one look-up of the request behind the proxy, not one per attribute
        req = request._get_current_object()  # type: ignore[attr-defined]
        rule = req.url_rule
        route = rule.rule if rule is not None else "unmatched"
        elapsed = perf_counter() - req.started
        method = req.method if req.method in _METHODS else "other"
        metrics.observe_request(route, method, response.status_code, elapsed)
        return response


def create_app(config: Settings | Mapping[str, Any] | None = None) -> Flask:
    """Build the app. ``config``: a Settings, or overrides applied on top of ``OCR_*`` env.

    The model is loaded here; if it cannot be, the app still starts and ``/readyz`` is 503.
    """
    settings = config if isinstance(config, Settings) else load_settings(config)
    app = Flask(
        __name__,
        static_folder="web/static",
        template_folder="web/templates",
    )
    app.request_class = _InMemoryRequest
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_upload_bytes,
        MAX_FORM_PARTS=settings.max_form_parts,
    )
    app.json.sort_keys = False  # keep "text" first, as documented
    app.json.compact = True

    metrics = Metrics()
    holder = ModelHolder(settings, metrics)
    holder.try_reload()
    feedback = (
        FeedbackStore(settings.feedback_dir, settings.feedback_max_mb * 1024 * 1024)
        if settings.feedback_dir
        else None
    )
    app.extensions["ocr"] = Service(settings, holder, metrics, feedback)
    app.register_blueprint(v1)
    app.register_blueprint(ops)
    _register_error_handlers(app, metrics)
    _register_metrics_hooks(app, metrics)
    return app
