"""The one error type the HTTP layer raises; ``app.py`` turns it into the JSON error shape."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["ApiError", "error_body"]


class ApiError(Exception):
    """A client-visible failure: HTTP ``status``, stable machine ``code``, human ``message``."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    """``{"error": {"code": ..., "message": ...}}`` — every error response and batch item error."""
    return {"error": {"code": code, "message": message}}
