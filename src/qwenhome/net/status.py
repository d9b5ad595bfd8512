"""An HTTP error status (>= 400) from a Hub, ModelScope or a CDN as a typed
error, in one place: the Hub's ``X-Error-Code`` first (gated, repository,
revision, entry), then the status (401/403 denied, 404 not found, 429 rate
limited, 408 and 5xx server errors), ``Retry-After`` kept for the back-off."""

from __future__ import annotations

import email.utils
import json
import logging
import time
from collections.abc import Callable
from typing import NoReturn, Protocol

from ..errors import (
    AuthError,
    EntryNotFoundError,
    QwenhomeError,
    RateLimitedError,
    RemoteError,
    RepoNotFoundError,
    RevisionNotFoundError,
    ServerError,
)

log = logging.getLogger(__name__)

# The Hub's error headers (huggingface_hub reads the same).
ERROR_CODE = "X-Error-Code"
ERROR_MESSAGE = "X-Error-Message"
RETRY_AFTER = "Retry-After"
MAX_RETRY_AFTER = 300.0  # a longer wait is not worth holding a pull for


class Headers(Protocol):
    """Response headers looked up by name in any case (``http.client``'s
    message, or :class:`qwenhome.net.head.Head`)."""

    def get(self, name: str, /) -> str | None: ...


def retry_after_seconds(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """``Retry-After`` as seconds (delta or HTTP date), capped at 5 minutes."""
    if not value:
        return None
    value = value.strip()
    try:
        secs = float(value)
    except ValueError:
        try:
            secs = email.utils.parsedate_to_datetime(value).timestamp() - now()
        except (TypeError, ValueError) as exc:
            log.debug("Retry-After %r not understood (%s): the usual backoff instead", value, exc)
            return None
    return max(0.0, min(secs, MAX_RETRY_AFTER))


def _server_message(body: bytes) -> str:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # (nested deeper than the decoder goes)
        return ""  # not JSON (an HTML error page): no message to quote
    if isinstance(data, dict):
        return str(data.get("error") or data.get("Message") or data.get("message") or "")[:200]
    return ""


def status_error(status: int, headers: Headers, url: str, what: str | None = None, body: bytes = b"") -> QwenhomeError:
    """The qwenhome error for an HTTP error status (>= 400) answered to ``url``.
    ``what`` names what was asked for (a repository at a revision); None: a
    file, named by its URL (the transfer's requests), whose bare 404 is then
    entry-not-found: the listing that named the file came from the same
    repository. ``body`` is the start of the answer, for the server's own message."""
    code = (headers.get(ERROR_CODE) or "").strip()
    msg = (headers.get(ERROR_MESSAGE) or "").strip() or _server_message(body)
    asked = what
    what = what or url
    detail = f": {msg}" if msg else ""
    if code == "GatedRepo" or (status == 403 and "gated" in msg.lower()):
        return AuthError(
            f"{what} is gated{detail}",
            code="gated-repo",
            hint="accept the model's terms on its page, then set HF_TOKEN to a token of that account",
            url=url,
        )
    if code == "RepoNotFound" or (status == 401 and not code):
        return RepoNotFoundError(f"repository {what} not found (or private){detail}", url=url, status=status)
    if code == "RevisionNotFound":
        return RevisionNotFoundError(f"revision of {what} not found{detail}", url=url)
    if code == "EntryNotFound":
        return EntryNotFoundError(f"file not found in {what}{detail}", url=url)
    if status in (401, 403):
        return AuthError(f"access to {what} denied (HTTP {status}){detail}", url=url, status=status)
    if status == 404 and asked is None:
        return EntryNotFoundError(f"{url} not found (HTTP 404){detail}", url=url, status=status)
    if status == 404:
        return RepoNotFoundError(f"{what} not found at {url} (HTTP 404){detail}", url=url, status=status)
    if status == 429:
        return RateLimitedError(f"rate limited by {url}", url=url,
                                retry_after=retry_after_seconds(headers.get(RETRY_AFTER)))
    if status == 408 or status >= 500:
        return ServerError(
            f"source error HTTP {status} for {what}{detail}",
            url=url,
            status=status,
            retry_after=retry_after_seconds(headers.get(RETRY_AFTER)),
        )
    return RemoteError(f"unexpected HTTP {status} for {what}{detail}", url=url, status=status)


def raise_for_status(status: int, headers: Headers, url: str, what: str | None = None, body: bytes = b"") -> NoReturn:
    """Raise :func:`status_error`'s error."""
    raise status_error(status, headers, url, what, body)
