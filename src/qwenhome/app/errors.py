"""Errors of the web API: the CLI's codes, rendered as JSON with an HTTP status.

Every error body is ``{"error": {"code", "message", "hint", "type"}}``; ``code``
is the same stable kebab-case code the CLI prints, ``message`` is where
OpenAI clients look, ``type`` is OpenAI's error class name.
"""

from __future__ import annotations

from typing import Any

from ..errors import (
    AuthError,
    DiskFullError,
    EntryNotFoundError,
    NetworkError,
    NotCachedError,
    OfflineError,
    QwenhomeError,
    RateLimitedError,
    RemoteError,
    RepoNotFoundError,
    RevisionNotFoundError,
    UsageError,
)
from .text import printable


class ApiError(QwenhomeError):
    """An error only the API can produce (a bad request, a busy queue)."""

    def __init__(self, status: int, message: str, *, code: str, hint: str | None = None,
                 headers: dict[str, str] | None = None, **context: Any) -> None:
        super().__init__(message, code=code, hint=hint, **context)
        self.status = status
        self.headers = headers or {}  # e.g. Retry-After on a 503


def headers_for(exc: QwenhomeError) -> dict[str, str] | None:
    """The response headers an error asks for (none for most)."""
    return exc.headers if isinstance(exc, ApiError) and exc.headers else None


# Most specific first: the first matching class decides the status.
_STATUS: tuple[tuple[type[QwenhomeError], int], ...] = (
    (UsageError, 400),
    (NotCachedError, 404),
    (RepoNotFoundError, 404),
    (RevisionNotFoundError, 404),
    (EntryNotFoundError, 404),
    (AuthError, 403),
    (RateLimitedError, 429),
    (DiskFullError, 507),
    (OfflineError, 503),
    (NetworkError, 502),
    (RemoteError, 502),
)


def status_for(exc: QwenhomeError) -> int:
    if isinstance(exc, ApiError):
        return exc.status
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def _openai_type(status: int) -> str:
    if status in (401, 403):
        return "authentication_error"
    if status == 404:
        return "not_found_error"
    if status == 429:
        return "rate_limit_error"
    if status < 500:
        return "invalid_request_error"
    return "server_error"


def _encodable(value: Any) -> Any:
    # A message may quote what the client sent, which may not be valid text.
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {k: _encodable(v) for k, v in value.items()}
    return value


def error_body(exc: QwenhomeError, status: int | None = None) -> dict[str, Any]:
    status = status if status is not None else status_for(exc)
    body: dict[str, Any] = _encodable(exc.to_dict())
    body["type"] = _openai_type(status)
    return {"error": body}
