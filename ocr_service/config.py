"""Service settings: built-in defaults, then ``OCR_*`` environment variables, then overrides.

One ``Settings`` object feeds the Flask app, the gunicorn configuration and ``ocr-serve``,
so every knob is read and validated in one place.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from .options import DEFAULT_MAX_PIXELS

__all__ = [
    "ENV_PREFIX", "ConfigError", "Settings", "default_workers", "load_settings"]

ENV_PREFIX = "OCR_"


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message names the variable."""


def default_workers() -> int:
    """One worker per core this process may run on (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on every platform
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class Settings:
    """Every setting of the service; field ``x`` is read from ``$OCR_X``."""

    #: model artifact base path; None = ``model_store.default_model_path()``
    model_path: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    #: gunicorn worker processes; 0 = one per core
    workers: int = 0
    #: request threads per worker: a worker accepts connections only while one is free.
    #: Two overlap one request's network I/O with another's CPU work; more only contend
    #: for the GIL on this CPU-bound work and let one worker take more of a burst of
    #: connections than its share.
    threads: int = 2
    #: seconds a worker's main loop may stall before gunicorn replaces it (gthread workers
    #: keep beating while request threads run: the input limits bound a request's cost)
    timeout: int = 30
    #: seconds in-flight requests get to finish on shutdown or reload
    graceful_timeout: int = 30
    #: recycle a worker after this many requests (plus jitter); 0 = never
    max_requests: int = 20000
    #: bearer token for ``POST /v1/admin/reload``; empty = admin routes disabled
    admin_token: str = ""
    #: request body limit in bytes (413 beyond it, before the body is read)
    max_upload_bytes: int = 5 * 1024 * 1024
    #: decoded image limit in pixels (413 beyond it)
    max_pixels: int = DEFAULT_MAX_PIXELS
    #: images per ``POST /v1/predict/batch`` (413 beyond it)
    max_batch: int = 64
    #: gunicorn access log target: "-" = stdout, a file path, or empty for none
    access_log: str = "-"
    #: folder where ``POST /v1/feedback`` keeps users' corrections; empty = feedback is off
    feedback_dir: str = ""
    #: size cap of that folder in MiB (507 for new corrections beyond it)
    feedback_max_mb: int = 100

    @property
    def worker_count(self) -> int:
        return self.workers or default_workers()

    @property
    def max_form_parts(self) -> int:
        """Multipart parts accepted: the batch cap plus the form fields (top_k, segment, ...)."""
        return self.max_batch + 8


_MINIMUM = {
    "port": 1,
    "workers": 0,
    "threads": 1,
    "timeout": 1,
    "graceful_timeout": 1,
    "max_requests": 0,
    "max_upload_bytes": 1,
    "max_pixels": 1,
    "max_batch": 1,
    "feedback_max_mb": 1,
}


def _coerce(name: str, value: Any) -> Any:
    """Turn an environment string (or override) into the field's type, validating ranges."""
    if name not in _MINIMUM:
        return None if value is None else str(value)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{ENV_PREFIX}{name.upper()} must be an integer, got {value!r}") from None
    if number < _MINIMUM[name] or (name == "port" and number > 65535):
        raise ConfigError(
            f"{ENV_PREFIX}{name.upper()} must be >= {_MINIMUM[name]}, got {number}"
            if name != "port"
            else f"{ENV_PREFIX}PORT must be in 1..65535, got {number}"
        )
    return number


def load_settings(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Defaults, then ``OCR_<FIELD>`` from ``environ`` (default ``os.environ``), then ``overrides``.

    Raises ConfigError naming the variable for an unusable value or an unknown override key.
    """
    env = os.environ if environ is None else environ
    names = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {}
    for name in names:
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None and (raw != "" or name in ("admin_token", "access_log")):
            values[name] = _coerce(name, raw)
    for key, value in (overrides or {}).items():
        if key not in names:
            raise ConfigError(f"unknown setting {key!r} (expected one of {sorted(names)})")
        values[key] = _coerce(key, value)
    for key in ("model_path", "feedback_dir"):
        if values.get(key):
            values[key] = str(Path(values[key]).expanduser())
    return replace(Settings(), **values)
