"""A TLS front for a plain server on 127.0.0.1, as a CDN edge or a
TLS-terminating proxy is: tests reach the project's mirror over HTTPS through
it, with a certificate from a test CA (``trustme``).

    with TlsFront(mirror.port, ca) as front:
        pull(... sources=[front.url], env SSL_CERT_FILE=<ca file> ...)

Each accepted connection gets its own plain connection to the backend, so
the backend's per-connection faults and its request log still apply; when the
backend drops a connection, the front drops the TLS one (no close_notify).

With ``plain_port``, a connection that does not open with a TLS handshake is
relayed in the clear to that port instead: ``https://127.0.0.1:P`` and
``http://127.0.0.1:P`` then reach two different servers, so a test can tell
what was sent over plain HTTP to the same host and port.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading

import trustme


class TlsFront:
    def __init__(self, backend_port: int, ca: trustme.CA, plain_port: int | None = None,
                 names: tuple[str, ...] = ("127.0.0.1", "localhost")) -> None:
        self.backend_port = backend_port
        self.plain_port = plain_port
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert(*names).configure_cert(self.ctx)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.handshakes = 0  # completed
        self.failed_handshakes = 0
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True, name="tls-front").start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stopped:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        if self.plain_port is not None:
            raw.settimeout(5.0)
            try:
                first = raw.recv(1, socket.MSG_PEEK)
            except OSError:
                first = b""
            raw.settimeout(None)
            if first and first != b"\x16":  # not a TLS handshake record: plain HTTP
                self._serve_plain(raw, self.plain_port)
                return
        try:
            tls = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            with self._lock:
                self.failed_handshakes += 1
            raw.close()
            return
        try:
            up = socket.create_connection(("127.0.0.1", self.backend_port))
        except OSError:
            tls.close()
            return
        with self._lock:
            self.handshakes += 1
            self._open.update((tls, up))
        try:
            self._relay(tls, up)
        except OSError:  # (ssl.SSLError included)
            pass
        finally:
            # Either side ending ends both: a dropped backend connection is a
            # dropped TLS connection, as at a real edge.
            with self._lock:
                for s in (tls, up):
                    if s in self._open:
                        self._open.discard(s)
                        with contextlib.suppress(OSError):
                            s.shutdown(socket.SHUT_RDWR)
                        s.close()

    def _serve_plain(self, raw: socket.socket, port: int) -> None:
        try:
            up = socket.create_connection(("127.0.0.1", port))
        except OSError:
            raw.close()
            return
        with self._lock:
            self._open.update((raw, up))
        try:
            while True:
                for s in select.select([raw, up], [], [], 5.0)[0]:
                    data = s.recv(256 * 1024)
                    if not data:
                        return
                    (up if s is raw else raw).sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                for s in (raw, up):
                    if s in self._open:
                        self._open.discard(s)
                        with contextlib.suppress(OSError):
                            s.shutdown(socket.SHUT_RDWR)
                        s.close()

    @staticmethod
    def _relay(tls: ssl.SSLSocket, up: socket.socket) -> None:
        """One thread per connection: an SSL object must not be read and
        written from two threads at once."""
        while True:
            readable = [tls] if tls.pending() else select.select([tls, up], [], [], 5.0)[0]
            if tls in readable:
                data = tls.recv(256 * 1024)
                if not data:
                    return
                up.sendall(data)
            if up in readable:
                data = up.recv(256 * 1024)
                if not data:
                    return
                tls.sendall(data)

    def stop(self) -> None:
        self._stopped = True
        self.listener.close()
        with self._lock:
            socks = list(self._open)
            self._open.clear()
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def __enter__(self) -> TlsFront:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
