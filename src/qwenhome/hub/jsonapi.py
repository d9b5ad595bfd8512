"""One metadata request: GET a JSON document from a source, with its error
statuses mapped to typed errors and a non-JSON answer named as such."""

from __future__ import annotations

import json
import logging
from typing import Any

from ..config import Source
from ..errors import ProtocolError, QwenhomeError
from ..net import HttpClient, Response, raise_for_status, token_for
from ..repo.ref import RepoRef

log = logging.getLogger(__name__)


def get_json(
    http: HttpClient,
    source: Source,
    url: str,
    ref: RepoRef,
    *,
    expected: str,
    html_hint: str | None = None,
) -> tuple[Any, Response]:
    """The parsed body and the response (for headers such as ``Link``).

    ``expected`` names what the source should be, for the hint; ``html_hint``
    replaces it when an HTML page answered (a captive portal, a proxy)."""
    resp = http.open("GET", url, token=token_for(source.token, source.url, url), headers={"Accept": "application/json"})
    if resp.status >= 400:
        try:
            body = resp.read(1 << 16)
        except QwenhomeError as exc:  # the status alone says enough
            log.debug("error body of %s not read: %s", url, exc)
            body = b""
        raise_for_status(resp.status, resp.headers, url, str(ref), body)
    data = resp.read()
    try:
        return json.loads(data), resp
    except (ValueError, RecursionError) as exc:  # (RecursionError: nested deeper than the decoder goes)
        html = "html" in (resp.header("Content-Type") or "")
        raise ProtocolError(
            f"{source.url} did not answer with JSON for {ref}",
            code="not-a-hub",
            hint=html_hint if html and html_hint else f"check that the source URL is {expected}",
            url=url,
        ) from exc
