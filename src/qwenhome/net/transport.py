"""How connections are made: directly, or through the proxy the environment
names (a tunnel, ``CONNECT``, for HTTPS), with TLS from the one context
builder. :class:`HttpClient` takes a transport; tests pass their own (a
subclass) to record the connections a command makes or to fail them, as
httpx lets a client take a transport."""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Mapping

from ..config import ca_bundle
from .proxy import proxy_origin
from .steps import connect_first, resolve, tunnel, wrap_tls
from .tls import ssl_context
from .url import Origin


class Transport:
    """The default transport. Thread-safe; the proxy settings and the TLS
    context are fixed for its life."""

    def __init__(self, env: Mapping[str, str] | None = None, context: ssl.SSLContext | None = None) -> None:
        self._env = dict(env or {})
        self._ssl = context
        self._proxies: dict[Origin, Origin | None] = {}

    def ssl_context(self) -> ssl.SSLContext:
        """The verifying TLS context (made on first use: loading the CAs
        costs start-up time a plain-HTTP pull does not need)."""
        if self._ssl is None:
            self._ssl = ssl_context(ca_bundle(self._env))
        return self._ssl

    def proxy_for(self, origin: Origin) -> Origin | None:
        """The proxy connections to ``origin`` go through, or None."""
        if origin not in self._proxies:
            self._proxies[origin] = proxy_origin(self._env, origin)
        return self._proxies[origin]

    def direct(self, origin: Origin) -> bool:
        """Whether a caller may dial ``origin`` itself with the steps of
        :mod:`qwenhome.net.steps` (the transfer engine's event loop does):
        no proxy is in the way. A transport that must see every connection
        answers False, and everything comes to :meth:`connect`."""
        return self.proxy_for(origin) is None

    def connect(self, origin: Origin, timeout: float) -> http.client.HTTPConnection:
        """A connected (and for HTTPS, verified) connection to ``origin``,
        each step bounded by ``timeout`` seconds. Raises the socket's, ssl's
        or http.client's exceptions (the client translates them)."""
        context = self.ssl_context() if origin.scheme == "https" else None  # (a bad CA bundle: before dialling)
        proxy = self.proxy_for(origin)
        hop = proxy or origin
        sock: socket.socket = connect_first(resolve(hop.host, hop.port), lambda: timeout)
        try:
            if proxy is not None and origin.scheme == "https":
                status, line = tunnel(sock, origin.host, origin.port)
                if status != 200:
                    said = line.split(None, 1)[1] if status is not None else line or "no answer"
                    raise OSError(f"Tunnel connection failed: {said}")
            if context is not None:
                sock = wrap_tls(sock, context, origin.host)
        except BaseException:
            sock.close()
            raise
        conn = http.client.HTTPConnection(origin.host, origin.port, timeout=timeout)
        conn.sock = sock
        conn.auto_open = 0  # a closed connection is never dialled again (above all, never without TLS)
        return conn
