"""Per-request hooks: how tests (and diagnostics) look into and bend the server.

With ``hooks=None`` the server takes its fast path: no hook calls, bodies by
``sendfile``. A :class:`Hooks` subclass may answer a request itself
(:meth:`Hooks.on_request`), replace the body writer (:meth:`Hooks.body_writer`),
and observe what was actually sent (:meth:`Hooks.on_response`).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO


@dataclass
class RequestInfo:
    """One request as the server saw it. Mutable only by the server."""

    method: str
    target: str  # raw request target, e.g. /Org/Name/resolve/main/a.bin
    path: str  # target without the query string
    headers: Mapping[str, str]
    connection_id: int  # one per TCP connection, counting from 1
    request_no: int  # index of this request on its connection, counting from 1
    client: str
    route_kind: str = ""  # info | tree | resolve | cdn | "" when unparsed
    file_path: str = ""  # repository file path for resolve/cdn
    range: str | None = None  # the Range header as sent
    authorized: bool = True  # passed the token check (True when no token is set)
    has_auth_header: bool = False  # the client sent an Authorization header
    server_port: int = 0  # the mirror's port that took the request (the CAS and xorbs may have their own)


@dataclass
class CannedResponse:
    """A response a hook supplies instead of the server's own.

    ``close`` drops the connection after sending; ``truncate_to`` sends only that
    many body bytes (with the full Content-Length) and then drops the connection.
    """

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    close: bool = False
    truncate_to: int | None = None


@dataclass
class BodySlice:
    """The part of a file a response body carries.

    A body made of other pieces (a xorb's chunks, the parts of a
    ``multipart/byteranges`` answer) is a subclass whose :meth:`read_at`
    gives its bytes; writers read through it, never from ``file`` directly.
    """

    file: BinaryIO
    offset: int  # first byte, absolute in the file
    length: int
    file_size: int

    def read_at(self, pos: int, n: int) -> bytes:
        """Up to ``n`` bytes of the body's source at absolute position ``pos`` (fewer at its end)."""
        return os.pread(self.file.fileno(), n, pos)


class BodyInterrupted(OSError):
    """A body writer stopped early; ``sent`` bytes reached the socket."""

    def __init__(self, sent: int, reason: str) -> None:
        super().__init__(reason)
        self.sent = sent


# write(sock, body) -> bytes actually sent; may raise OSError when the peer goes away.
BodyWriter = Callable[[socket.socket, BodySlice], int]


class Hooks:
    """No-op base class; override what a test needs. Must be thread-safe."""

    def on_connect(self, connection_id: int) -> None:
        """Called once per new TCP connection."""

    def on_request(self, info: RequestInfo) -> CannedResponse | None:
        """Return a response to send instead of the real one (may also sleep)."""
        return None

    def body_writer(self, info: RequestInfo, body: BodySlice) -> BodyWriter | None:
        """Return a writer to replace sendfile for this body (``body``), or None."""
        return None

    def on_response(self, info: RequestInfo, status: int, body_bytes_sent: int, error: str | None) -> None:
        """Called after every response (also when the connection broke mid-body)."""
