"""Map a Hub (or ModelScope, or CDN) HTTP error status to a typed error, in one place."""

from __future__ import annotations

import email.utils
import json
import logging
import time
from collections.abc import Callable
from email.message import Message
from typing import NoReturn

from ..errors import (
    AuthError,
    EntryNotFoundError,
    RateLimitedError,
    RemoteError,
    RepoNotFoundError,
    RevisionNotFoundError,
    ServerError,
)
from ..repo.ref import RepoRef

log = logging.getLogger(__name__)


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
    return max(0.0, min(secs, 300.0))


def _server_message(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return ""  # not JSON (an HTML error page): no message to quote
    if isinstance(data, dict):
        return str(data.get("error") or data.get("Message") or data.get("message") or "")[:200]
    return ""


def raise_for_status(
    status: int, headers: Message, url: str, ref: RepoRef | None = None, body: bytes = b""
) -> NoReturn:
    """Raise the qwenhome error for an HTTP error status (>= 400)."""
    code = (headers.get("X-Error-Code") or "").strip()
    msg = (headers.get("X-Error-Message") or "").strip() or _server_message(body)
    what = str(ref) if ref else url
    detail = f": {msg}" if msg else ""
    if code == "GatedRepo" or (status == 403 and "gated" in msg.lower()):
        raise AuthError(
            f"{what} is gated{detail}",
            code="gated-repo",
            hint="accept the model's terms on its page, then set HF_TOKEN to a token of that account",
            url=url,
        )
    if code == "RepoNotFound" or (status == 401 and not code):
        raise RepoNotFoundError(f"repository {what} not found (or private){detail}", url=url, status=status)
    if code == "RevisionNotFound":
        raise RevisionNotFoundError(f"revision of {what} not found{detail}", url=url)
    if code == "EntryNotFound":
        raise EntryNotFoundError(f"file not found in {what}{detail}", url=url)
    if status in (401, 403):
        raise AuthError(f"access to {what} denied (HTTP {status}){detail}", url=url, status=status)
    if status == 404:
        raise RepoNotFoundError(f"{what} not found at {url} (HTTP 404){detail}", url=url, status=status)
    if status == 429:
        raise RateLimitedError(
            f"rate limited by {url}", url=url, retry_after=retry_after_seconds(headers.get("Retry-After"))
        )
    if status == 408 or status >= 500:
        raise ServerError(
            f"source error HTTP {status} for {what}{detail}",
            url=url,
            status=status,
            retry_after=retry_after_seconds(headers.get("Retry-After")),
        )
    raise RemoteError(f"unexpected HTTP {status} for {what}{detail}", url=url, status=status)
