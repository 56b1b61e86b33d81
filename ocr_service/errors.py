"""The one error type the HTTP layer raises, and the base of the errors that carry their own
status; ``app.py`` turns them into the JSON error shape."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["ApiError", "CodedError", "error_body"]


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


class CodedError(Exception):
    """An error that knows its HTTP status and stable code, stated in its class line:
    ``class X(CodedError, status=..., code=...)``; a subclass without them keeps its parent's.
    """

    status = 400
    code = "bad_request"

    def __init_subclass__(
        cls, *, status: int | None = None, code: str | None = None, **kwargs: object
    ) -> None:
        super().__init_subclass__(**kwargs)
        if status is not None:
            cls.status = status
        if code is not None:
            cls.code = code


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    """``{"error": {"code": ..., "message": ...}}`` — every error response and batch item error."""
    return {"error": {"code": code, "message": message}}
