"""How the mirror's request handler writes responses: status and headers, JSON, canned answers, bodies.

Kept apart from the routes (:mod:`.handler`) so that both stay small. Every
response goes through :meth:`ResponseWriter._start`, which records the status
for the hooks; every body through :meth:`ResponseWriter._write_body`, which
lets a hook replace the writer (faults, pacing) and records what reached the
socket.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from .hooks import BodyInterrupted, BodySlice, BodyWriter, CannedResponse, Hooks, RequestInfo
from .protocol import X_ERROR_CODE, X_ERROR_MESSAGE

_CRLF = re.compile("[\r\n\x00]")


class ResponseWriter(BaseHTTPRequestHandler):
    """Response primitives; the subclass sets ``_info``, ``_status``, ``_sent``, ``_error`` per request."""

    _info: RequestInfo
    _status: int
    _sent: int
    _error: str | None

    def _start(self, status: int, headers: dict[str, str], length: int, close: bool = False) -> None:
        self._status = status
        self.send_response(status)
        for name, value in headers.items():
            # A message may quote the request: no line break, and what Latin-1
            # cannot carry escaped (http.server's encoding would raise).
            self.send_header(name, _CRLF.sub(lambda m: repr(m.group())[1:-1], value)
                             .encode("latin-1", "backslashreplace").decode("latin-1"))
        self.send_header("Content-Length", str(length))
        if close:
            self.close_connection = True
            self.send_header("Connection", "close")
        self.end_headers()

    def _send_bytes(self, status: int, body: bytes, head: bool, headers: dict[str, str]) -> None:
        self._start(status, headers, len(body))
        if not head and body:
            self.wfile.write(body)
            self._sent = len(body)

    def _send_json(self, status: int, obj: Any, head: bool, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(obj, separators=(",", ":")).encode()
        self._send_bytes(status, body, head, {"Content-Type": "application/json; charset=utf-8", **(headers or {})})

    def _send_hub_error(self, status: int, code: str, message: str, head: bool,
                        headers: dict[str, str] | None = None) -> None:
        self._send_json(status, {"error": message}, head,
                        {X_ERROR_CODE: code, X_ERROR_MESSAGE: message, **(headers or {})})

    def _send_canned(self, canned: CannedResponse, head: bool) -> None:
        headers = {"Content-Type": canned.content_type, **canned.headers}
        body = canned.body
        close = canned.close or canned.truncate_to is not None
        self._start(canned.status, headers, len(body), close=close)
        if head:
            return
        part = body if canned.truncate_to is None else body[: canned.truncate_to]
        if part:
            self.wfile.write(part)
            self._sent = len(part)
        if canned.truncate_to is not None:
            self._error = "truncated"

    def _write_body(self, body: BodySlice, default: Callable[[Any, BodySlice], int], hooks: Hooks | None) -> None:
        """Send ``body`` (after its headers) with the hooks' writer or ``default``; a body cut
        short closes the connection (the client sees fewer bytes than Content-Length)."""
        writer: BodyWriter | None = hooks.body_writer(self._info, body) if hooks is not None else None
        try:
            self._sent = (writer or default)(self.connection, body)
        except BodyInterrupted as exc:
            self._sent = exc.sent
            self._error = str(exc) or "interrupted"
            self.close_connection = True
        except OSError as exc:
            self._error = type(exc).__name__
            self.close_connection = True
        if self._sent < body.length:
            self.close_connection = True
