"""A small HTTP/1.1 client on ``http.client``: pooled keep-alive connections,
bounded connect and read time-outs on every request, connections from a
:class:`~qwenhome.net.transport.Transport` (proxies, TLS), redirects followed
by hand so that a token never crosses to another origin
(:func:`~qwenhome.net.url.token_for`, the one rule every sender asks).
Transport exceptions become qwenhome errors at one boundary,
:func:`~qwenhome.net.translate.translate`."""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Mapping
from urllib.parse import urljoin

from ..config import Timeouts
from ..errors import ProtocolError, TransferInterrupted
from .head import USER_AGENT, request_headers
from .headtime import bounded_head
from .pool import ConnectionPool
from .response import Response
from .translate import translate
from .transport import Transport
from .url import REDIRECT_CODES, Origin, request_target, token_for

_RETRY_FRESH = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class HttpClient:
    """Thread-safe. One per pull (or per process).

    ``env`` is the settings' copy of the environment (proxies, the CA
    bundle); ``transport`` replaces the connections made from it."""

    def __init__(
        self,
        timeouts: Timeouts = Timeouts(),
        env: Mapping[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        user_agent: str = USER_AGENT,
        transport: Transport | None = None,
    ) -> None:
        self.timeouts = timeouts
        self.pool = ConnectionPool()
        self.user_agent = user_agent
        self.transport = transport or Transport(env, ssl_context)
        self._direct: dict[str, bool] = {}  # direct()'s answers by scheme://host:port

    def ssl_context(self) -> ssl.SSLContext:
        return self.transport.ssl_context()

    def direct(self, url: str) -> bool:
        """Whether ``url`` (HTTP or HTTPS) may be dialled by the caller itself
        (see :meth:`Transport.direct`): the case the transfer engine's event
        loop speaks itself."""
        # Asked per file and per range: remembered per scheme and host (the
        # transport's answers are fixed for the client's life).
        end = url.find("/", url.find("//") + 2) if "//" in url else -1
        key = url if end < 0 else url[:end]
        direct = self._direct.get(key)
        if direct is None:
            direct = self._direct[key] = self.transport.direct(Origin.of(url))
        return direct

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

    def _connect(self, origin: Origin, url: str) -> http.client.HTTPConnection:
        try:
            return self.transport.connect(origin, self.timeouts.connect)
        except BaseException as exc:
            raise translate(exc, url, connecting=True) from exc

    def _once(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        token: str | None,
        read_timeout: float | None,
    ) -> Response:
        origin = Origin.of(url)
        # Through an HTTP proxy the request names the whole URL (absolute form).
        target = url if origin.scheme == "http" and self.transport.proxy_for(origin) else request_target(url)
        hdrs = request_headers(self.user_agent, token, headers)
        rt = read_timeout if read_timeout is not None else self.timeouts.read
        # A pooled connection may have been closed by the server meanwhile: on a
        # failure before any response byte, retry once on a fresh connection.
        for attempt in (0, 1):
            conn = self.pool.get(origin) if attempt == 0 else None
            reused = conn is not None
            if conn is None:
                conn = self._connect(origin, url)
            try:
                if conn.sock is not None:
                    conn.sock.settimeout(rt)
                conn.response_class = bounded_head(rt, origin.authority, origin.host)
                conn.request(method, target, headers=hdrs)
                raw = conn.getresponse()
            except BaseException as exc:
                conn.close()
                if reused and isinstance(exc, _RETRY_FRESH):
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
