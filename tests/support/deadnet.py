"""Addresses in the three broken-network states offline detection must handle,
all on this machine:

(a) ``UNRESOLVABLE_URL``: a name that never resolves (``.invalid`` is reserved);
(b) :func:`refused_url`: a port where nothing listens (connection refused);
(c) :class:`BlackHole`: a listening socket that either never accepts
    (``accept=False``: the kernel completes the handshake, nobody reads) or
    accepts and never replies (``accept=True``); it counts connections.
"""

from __future__ import annotations

import select
import socket
import threading
from types import TracebackType

UNRESOLVABLE_URL = "http://qwenhome-offline-test.invalid"


def refused_url() -> str:
    """An http URL on 127.0.0.1 whose port refuses connections."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


class BlackHole:
    """Accepts TCP connections (or leaves them in the backlog) and never answers."""

    def __init__(self, accept: bool = True) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accept = accept
        self.accepted = 0
        self.held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._accepting = threading.Lock()  # held while accept() may take a connection

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> BlackHole:
        if self.accept:
            self.sock.settimeout(0.05)
            self._thread = threading.Thread(target=self._loop, daemon=True, name="blackhole")
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._accepting:
                try:
                    conn, _ = self.sock.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                self.accepted += 1
                self.held.append(conn)

    def connections(self) -> int:
        """Connections made so far, those still waiting in the backlog included: exact
        once the clients are done, with no sleep to let the accept loop catch up."""
        with self._accepting:
            while select.select([self.sock], [], [], 0)[0]:
                conn, _ = self.sock.accept()  # held open and silent, as the client saw it
                self.accepted += 1
                self.held.append(conn)
            return self.accepted

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        for c in self.held:
            c.close()
        self.sock.close()

    def __enter__(self) -> BlackHole:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
