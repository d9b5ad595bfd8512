"""A plain HTTP client for protocol tests: one request, or several on one connection."""

from __future__ import annotations

import http.client
import select
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class Connection:
    """A persistent HTTP/1.1 connection to ``url``'s host (keep-alive)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)

    def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                read: int | None = None) -> Response:
        """Send one request; read the whole body (or only ``read`` bytes)."""
        self.conn.request(method, path, headers=headers or {})
        resp = self.conn.getresponse()
        body = resp.read() if read is None else resp.read(read)
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)

    def read_body_until_error(self, method: str, path: str,
                              headers: dict[str, str] | None = None) -> tuple[Response, bytes, Exception | None]:
        """Read a body chunk by chunk until it ends or the connection fails."""
        self.conn.request(method, path, headers=headers or {})
        resp = self.conn.getresponse()
        got = bytearray()
        error: Exception | None = None
        try:
            while chunk := resp.read1(65536):
                got += chunk
        except (http.client.IncompleteRead, OSError) as exc:
            error = exc
        if error is None and resp.length:  # ended before Content-Length: dropped
            error = http.client.IncompleteRead(bytes(got), resp.length)
        head = Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, b"")
        return head, bytes(got), error

    @property
    def local_port(self) -> int | None:
        sock = self.conn.sock
        return None if sock is None else int(sock.getsockname()[1])

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def request(url: str, method: str = "GET", path: str = "/", headers: dict[str, str] | None = None,
            timeout: float = 10.0) -> Response:
    with Connection(url, timeout) as conn:
        return conn.request(method, path, headers)


def drip_head(sock: socket.socket, head: bytes, every: float = 0.05) -> float | None:
    """Send ``head`` a byte every ``every`` seconds (a slow-loris client);
    the seconds until the server answered or closed, None if it never did."""
    t0 = time.monotonic()
    for byte in head:
        if select.select([sock], [], [], every)[0]:
            return time.monotonic() - t0
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return time.monotonic() - t0
    return None
