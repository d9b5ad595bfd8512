"""The few bytes of HTTP/1.1 the event loop speaks itself: a ranged GET and
the head of its answer. Anything unusual (TLS, proxies, chunked bodies, error
statuses) is left to :mod:`qwenhome.hub.http` through the threaded path."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import ProtocolError

MAX_HEAD = 64 * 1024


@dataclass(frozen=True)
class Head:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header keeps the last value
    http10: bool = False  # an HTTP/1.0 answer: the connection closes unless it says keep-alive

    def get(self, name: str) -> str | None:
        return self.headers.get(name)

    @property
    def length(self) -> int | None:
        value = self.headers.get("content-length")
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None

    @property
    def keep_alive(self) -> bool:
        connection = (self.headers.get("connection") or "").lower()
        if self.http10:  # (Python's http.server answers so by default)
            return "keep-alive" in connection
        return "close" not in connection


def request(url: str, host_header: str, headers: dict[str, str]) -> bytes:
    parts = urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {target} HTTP/1.1", f"Host: {host_header}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def parse_head(buf: bytes | bytearray) -> tuple[Head, int] | None:
    """The response head in ``buf`` and where the body starts, or None while
    incomplete. Raises ProtocolError for a malformed or oversized head."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise ProtocolError("response head too large", code="bad-response")
        return None
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    status_line = lines[0].split(None, 2)
    if len(status_line) < 2 or not status_line[0].startswith("HTTP/1.") or not status_line[1].isdigit():
        raise ProtocolError(f"bad status line {lines[0][:80]!r}", code="bad-response")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise ProtocolError(f"bad header line {line[:80]!r}", code="bad-response")
        headers[name.strip().lower()] = value.strip()
    return Head(int(status_line[1]), headers, status_line[0] == "HTTP/1.0"), end + 4
