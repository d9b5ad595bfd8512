"""HTTP/1.1 on the wire: the request head a client sends and the parser of
the response head, for callers that drive sockets themselves (the transfer
engine's event loop, the reachability probe). The headers every request
carries, and the bearer token, are attached here for every caller."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .. import __version__
from ..errors import ProtocolError
from .ranges import parse_count

USER_AGENT = f"qwenhome/{__version__}"
MAX_HEAD = 64 * 1024


def request_headers(user_agent: str, token: str | None = None,
                    extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The headers of a request: who asks, no content coding (bodies are
    written at their offsets as they come), ``extra``, and the bearer token
    the caller may send (see :func:`qwenhome.net.url.token_for`)."""
    headers = {"User-Agent": user_agent, "Accept-Encoding": "identity"}
    if extra:
        headers.update(extra)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def request_head(method: str, target: str, host_header: str, headers: Mapping[str, str]) -> bytes:
    """The bytes of a request without a body (``target``: see
    :func:`qwenhome.net.url.request_target`)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host_header}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass(frozen=True)
class Head:
    """A parsed response head."""

    status: int
    headers: dict[str, str]  # lower-case names; a repeated header keeps the last value
    http10: bool = False  # an HTTP/1.0 answer: the connection closes unless it says keep-alive

    def get(self, name: str, default: str | None = None) -> str | None:
        """A header by name, in any case (as ``email.message.Message.get``)."""
        return self.headers.get(name.lower(), default)

    @property
    def length(self) -> int | None:
        return parse_count(self.headers.get("content-length"))

    @property
    def keep_alive(self) -> bool:
        connection = (self.headers.get("connection") or "").lower()
        if self.http10:  # (Python's http.server answers so by default)
            return "keep-alive" in connection
        return "close" not in connection


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
    if (len(status_line) < 2 or not status_line[0].startswith("HTTP/1.")
            or len(status_line[1]) != 3 or parse_count(status_line[1]) is None):
        raise ProtocolError(f"bad status line {lines[0][:80]!r}", code="bad-response")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise ProtocolError(f"bad header line {line[:80]!r}", code="bad-response")
        headers[name.strip().lower()] = value.strip()
    return Head(int(status_line[1]), headers, status_line[0] == "HTTP/1.0"), end + 4
