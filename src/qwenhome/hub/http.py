"""A small HTTP/1.1 client on ``http.client``: pooled keep-alive connections,
bounded connect and read time-outs on every request, proxies from the
settings' environment copy, redirects followed by hand so that a token never
crosses to another origin (:func:`token_for`, the one rule every sender asks).

This is the one boundary where transport exceptions (socket, ssl,
http.client) become qwenhome errors; see :func:`translate`.
"""

from __future__ import annotations

import errno
import http.client
import os
import select
import socket
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

from .. import __version__
from ..config import Timeouts
from ..errors import (
    ConnectError,
    NetworkError,
    ProtocolError,
    ReadTimeoutError,
    TransferInterrupted,
)
from .proxy import proxy_url_for

USER_AGENT = f"qwenhome/{__version__}"
REDIRECT_CODES = (301, 302, 303, 307, 308)


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Origin:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ProtocolError(f"unsupported URL {url!r}", code="bad-url")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:  # a port out of range, or not a number
            raise ProtocolError(f"unsupported URL {url!r}: {exc}", code="bad-url") from exc
        return cls(parts.scheme, parts.hostname.lower(), port)

    @property
    def authority(self) -> str:
        """``host[:port]`` as a Host header names it: the port only when it is
        not the scheme's own, an IPv6 address in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == (443 if self.scheme == "https" else 80) else f"{host}:{self.port}"


def token_for(token: str | None, given_for: str, url: str) -> str | None:
    """``token`` if it may go with a request to ``url``, having been given for
    the URL ``given_for`` (a source's URL); else None.

    The one rule for credentials, asked by every place that attaches one: a
    token goes only to the origin it was given for, the same scheme, host and
    port. So never to another port of the same host (a CDN beside the API),
    never over plain HTTP when it was given for HTTPS, never to another host,
    whatever a redirect, a listing's ``Link`` or a signed URL names."""
    if not token:
        return None
    try:
        return token if Origin.of(url) == Origin.of(given_for) else None
    except ProtocolError:
        return None


@dataclass
class Response:
    """A response whose body may still be streaming. Call ``release`` (body read
    to the end: the connection is reused) or ``close`` (connection dropped)."""

    status: int
    headers: http.client.HTTPMessage
    url: str
    _resp: http.client.HTTPResponse
    _conn: http.client.HTTPConnection
    _pool: ConnectionPool
    _origin: Origin
    _done: bool = field(default=False)
    _drained: bool = field(default=False)

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)

    def readinto(self, buf: memoryview) -> int:
        try:
            return self._resp.readinto(buf)
        except BaseException as exc:
            self.close()
            raise translate(exc, self.url) from exc

    def can_splice(self) -> bool:
        """Whether the body can move socket → file inside the kernel (Linux
        ``splice``): plain HTTP with a known length. TLS must be decrypted in
        user space, so it always takes ``readinto``."""
        sock = self._conn.sock
        return (
            hasattr(os, "splice")
            and sock is not None
            and not isinstance(sock, ssl.SSLSocket)
            and self._resp.length is not None
            and not self._resp.chunked
        )

    def splice_into(self, fd: int, pos: int, count: int, pipe: tuple[int, int], timeout: float) -> int:
        """Move up to ``count`` body bytes into ``fd`` at ``pos`` through ``pipe``
        without copying them through user space; returns how many (0 at EOF).
        Only after :meth:`can_splice`. Spares the two copies of recv + pwrite."""
        resp = self._resp
        sock = self._conn.sock
        assert sock is not None and resp.fp is not None and resp.length is not None
        count = min(count, resp.length)
        if count <= 0:
            return 0
        try:
            if not self._drained:
                # What the header parser read ahead sits in the buffered reader:
                # hand it over first, then read the socket directly.
                self._drained = True
                head = resp.fp.peek(1)[:count]
                if head:
                    data = resp.fp.read(len(head))
                    written = os.pwrite(fd, data, pos)
                    resp.length -= written
                    self._finish_if_done()
                    return written
            while True:
                try:
                    moved = os.splice(sock.fileno(), pipe[1], count)
                    break
                except BlockingIOError:
                    poller = select.poll()
                    poller.register(sock.fileno(), select.POLLIN)
                    if not poller.poll(timeout * 1000):
                        raise TimeoutError(f"no byte for {timeout:.0f} s") from None
            if moved == 0:
                return 0
            drain_pipe(pipe[0], fd, pos, moved)
        except OSError as exc:
            self.close()
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EINVAL, errno.EBADF):
                raise  # the file side: the caller classifies
            raise translate(exc, self.url) from exc
        resp.length -= moved
        self._finish_if_done()
        return moved

    def _finish_if_done(self) -> None:
        if self._resp.length == 0:
            self._resp.read()  # closes the response cleanly: the connection can be reused

    def read(self, limit: int = 64 << 20) -> bytes:
        try:
            data = self._resp.read(limit + 1)
        except BaseException as exc:
            self.close()
            raise translate(exc, self.url) from exc
        if len(data) > limit:
            self.close()
            raise ProtocolError(f"response from {self.url} is larger than {limit} bytes", code="bad-metadata")
        self.release()
        return data

    def release(self) -> None:
        if self._done:
            return
        self._done = True
        if self._resp.isclosed() and not self._resp.will_close:
            self._pool.put(self._origin, self._conn)
        else:
            self._conn.close()

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._conn.close()


def drain_pipe(pipe_r: int, fd: int, pos: int, count: int) -> None:
    """Move ``count`` bytes waiting in a pipe into ``fd`` at ``pos`` (splice's
    second half: pipe → file). A short write means the disk is filling up."""
    done = 0
    while done < count:
        n = os.splice(pipe_r, fd, count - done, offset_dst=pos + done)
        if n <= 0:
            raise OSError(errno.ENOSPC, "short write")
        done += n


class ConnectionPool:
    """Idle keep-alive connections per origin, shared by threads."""

    def __init__(self, max_idle_per_origin: int = 64) -> None:
        self._idle: dict[Origin, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._max = max_idle_per_origin

    def get(self, origin: Origin) -> http.client.HTTPConnection | None:
        with self._lock:
            conns = self._idle.get(origin)
            return conns.pop() if conns else None

    def put(self, origin: Origin, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            conns = self._idle.setdefault(origin, [])
            if len(conns) < self._max:
                conns.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            for conns in self._idle.values():
                for c in conns:
                    c.close()
            self._idle.clear()


def translate(exc: BaseException, url: str) -> BaseException:
    """Map transport exceptions to qwenhome errors, most specific first.
    Messages name the server as ``host[:port]`` (two sources may share a host)."""
    host = urlsplit(url).hostname or url
    if isinstance(exc, NetworkError | ProtocolError):
        return exc
    if isinstance(exc, socket.gaierror):
        return ConnectError(f"cannot resolve {host}: {exc.strerror}", code="dns-resolution-failed", host=host)
    try:
        where = Origin.of(url).authority
    except ProtocolError:
        where = host
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ConnectError(
            f"TLS certificate of {where} not trusted: {exc.verify_message}",
            code="tls-verification-failed",
            hint="a proxy may be intercepting TLS; run `qwenhome doctor`, or set SSL_CERT_FILE to its CA",
            host=host,
        )
    if isinstance(exc, ConnectionRefusedError):
        return ConnectError(f"connection to {where} refused", code="connection-refused", host=host)
    if isinstance(exc, TimeoutError | socket.timeout):
        return ReadTimeoutError(f"{where} did not answer in time", code="response-timeout", host=host)
    if isinstance(exc, http.client.IncompleteRead | http.client.RemoteDisconnected | ConnectionResetError | BrokenPipeError):
        return TransferInterrupted(f"connection to {where} dropped", host=host)
    if isinstance(exc, ssl.SSLError):
        return ConnectError(f"TLS error with {where}: {exc}", code="tls-error", host=host)
    if isinstance(exc, http.client.HTTPException):
        return TransferInterrupted(f"bad HTTP exchange with {where}: {exc!r}", host=host)
    if isinstance(exc, OSError):
        return ConnectError(f"network error with {where}: {exc.strerror or exc}", host=host)
    if isinstance(exc, ValueError):  # (UnicodeError too) a host or path no request can carry: retrying cannot help
        return ProtocolError(f"cannot send a request to {url}: {exc}", code="bad-url", host=host)
    return exc  # Ctrl+C, or a bug: not a network failure, so neither retried nor renamed


class HttpClient:
    """Thread-safe. One per pull (or per process)."""

    def __init__(
        self,
        timeouts: Timeouts = Timeouts(),
        env: Mapping[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        user_agent: str = USER_AGENT,
    ) -> None:
        self.timeouts = timeouts
        self.pool = ConnectionPool()
        self.user_agent = user_agent
        self._env = dict(env or {})
        self._ssl = ssl_context
        self._direct: dict[str, bool] = {}  # direct()'s answers by scheme://host:port

    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=self._env.get("SSL_CERT_FILE") or None)
        return self._ssl

    def _proxy_for(self, origin: Origin) -> str | None:
        return proxy_url_for(self._env, origin.scheme, origin.host)

    def direct(self, url: str) -> bool:
        """Whether ``url`` (HTTP or HTTPS) is reached without a proxy: the case
        the transfer engine's event loop speaks itself."""
        # Asked per file and per range: remembered per scheme and host (the
        # proxy settings are fixed for the client's life).
        end = url.find("/", url.find("//") + 2) if "//" in url else -1
        key = url if end < 0 else url[:end]
        direct = self._direct.get(key)
        if direct is None:
            direct = self._direct[key] = not self._proxy_for(Origin.of(url))
        return direct

    def _connect(self, origin: Origin, timeout: float) -> http.client.HTTPConnection:
        proxy = self._proxy_for(origin)
        conn: http.client.HTTPConnection
        if proxy:
            p = Origin.of(proxy if "://" in proxy else "http://" + proxy)
            if origin.scheme == "https":
                conn = http.client.HTTPSConnection(p.host, p.port, timeout=timeout, context=self.ssl_context())
                conn.set_tunnel(origin.host, origin.port)
            else:
                conn = http.client.HTTPConnection(p.host, p.port, timeout=timeout)
        elif origin.scheme == "https":
            conn = http.client.HTTPSConnection(origin.host, origin.port, timeout=timeout, context=self.ssl_context())
        else:
            conn = http.client.HTTPConnection(origin.host, origin.port, timeout=timeout)
        try:
            conn.connect()
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect_translated(self, origin: Origin, url: str) -> http.client.HTTPConnection:
        try:
            return self._connect(origin, self.timeouts.connect)
        except TimeoutError as exc:
            raise ConnectError(
                f"connecting to {origin.host}:{origin.port} timed out",
                code="connection-timeout",
                host=origin.host,
            ) from exc
        except BaseException as exc:
            raise translate(exc, url) from exc

    def open(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        token: str | None = None,
        follow_redirects: bool = True,
        max_redirects: int = 10,
        read_timeout: float | None = None,
    ) -> Response:
        """Send a request and return once the status line and headers arrived.

        ``token`` is one the caller may send to ``url`` (callers ask
        :func:`token_for`); it goes as a bearer token to ``url``'s origin only
        and is dropped for good at the first redirect to another origin.
        """
        given_for = url
        for _ in range(max_redirects + 1):
            resp = self._once(method, url, headers, token, read_timeout)
            if not (follow_redirects and resp.status in REDIRECT_CODES):
                return resp
            location = resp.header("Location")
            resp.read(1 << 20) if method != "HEAD" else resp.release()
            if not location:
                raise ProtocolError(f"redirect without Location from {url}", code="bad-redirect")
            url = urljoin(url, location)
            token = token_for(token, given_for, url)
            if resp.status == 303:
                method = "GET"
        raise ProtocolError(f"too many redirects from {url}", code="too-many-redirects")

    def _once(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        token: str | None,
        read_timeout: float | None,
    ) -> Response:
        origin = Origin.of(url)
        parts = urlsplit(url)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        if self._proxy_for(origin) and origin.scheme == "http":
            target = url  # absolute-form through an HTTP proxy
        hdrs: dict[str, Any] = {"User-Agent": self.user_agent, "Accept-Encoding": "identity"}
        if headers:
            hdrs.update(headers)
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        rt = read_timeout if read_timeout is not None else self.timeouts.read
        # A pooled connection may have been closed by the server meanwhile: on a
        # failure before any response byte, retry once on a fresh connection.
        for attempt in (0, 1):
            conn = self.pool.get(origin) if attempt == 0 else None
            reused = conn is not None
            if conn is None:
                conn = self._connect_translated(origin, url)
            try:
                if conn.sock is not None:
                    conn.sock.settimeout(rt)
                conn.request(method, target, headers=hdrs)
                raw = conn.getresponse()
            except BaseException as exc:
                conn.close()
                if reused and isinstance(exc, http.client.RemoteDisconnected | ConnectionResetError | BrokenPipeError):
                    continue
                raise translate(exc, url) from exc
            return Response(raw.status, raw.headers, url, raw, conn, self.pool, origin)
        raise TransferInterrupted(f"connection to {origin.host} dropped", host=origin.host)  # pragma: no cover

    def get_bytes(self, url: str, *, token: str | None = None, headers: Mapping[str, str] | None = None,
                  limit: int = 64 << 20) -> tuple[Response, bytes]:
        resp = self.open("GET", url, token=token, headers=headers)
        return resp, resp.read(limit)

    def close(self) -> None:
        self.pool.close()
