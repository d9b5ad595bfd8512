"""One listening socket of the mirror, and what its request handler may ask of the mirror.

A mirror listens on one port, or on one per **role** (``hub``, ``cas``,
``xorb``: :attr:`.protocol.Route.role`) when the Xet CAS and the xorb bytes
get ports of their own; each :class:`Listener` knows which roles it serves.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from ..config import MIRROR_CONNECTIONS, MIRROR_HEAD_TIMEOUT
from .backends import Backend
from .cas.service import XetService
from .catalog import FileEntry, Snapshot
from .hooks import Hooks
from .protocol import Route
from .pullthrough import PullThroughBackend

log = logging.getLogger(__name__)


class Mirror(Protocol):
    """What the handler needs from the server it belongs to (:class:`.server.MirrorServer`)."""

    backend: Backend
    pull_through: PullThroughBackend | None
    token: str | None
    hooks: Hooks | None
    redirect_lfs: bool
    xet: XetService | None
    tree_page_size: int
    idle_timeout: float
    head_timeout: float
    first_byte_wait: float
    conn_ids: Iterator[int]

    def cdn_location(self, snap: Snapshot, entry: FileEntry) -> str: ...

    def check_signature(self, route: Route) -> bool: ...

    def base_url(self, role: str, host_header: str | None, here: Listener) -> str: ...

    def count(self, kind: str, nbytes: int) -> None: ...


# Past the connections (each a thread) a listener serves at once, the oldest
# connection waiting for (or reading) a request head is closed to make room:
# idle keep-alive and slow-loris connections cannot lock out a real request;
# when every slot carries a request, the newcomer gets a quick 503. A request
# head must be whole some seconds after its first byte: a client sending it a
# byte at a time (slow-loris) is cut, a real one sends it at once.


@dataclass(frozen=True)
class Limits:
    """What one client may hold of a mirror port (``mirror serve``'s
    ``--max-connections`` and ``--head-timeout``)."""

    max_connections: int = MIRROR_CONNECTIONS  # connections served at once, per port
    head_timeout: float = MIRROR_HEAD_TIMEOUT  # seconds from a request head's first byte to its end

_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
         b"Connection: close\r\nContent-Length: %d\r\n\r\n%s")


# Descriptors a connection may hold (its socket, the file it is sent) and
# those the process keeps besides (listening sockets, the hash cache, logs).
FDS_PER_CONNECTION = 2
FD_RESERVE = 128


def fit_descriptors(connections: int, ports: int) -> int:
    """The connection cap each of ``ports`` can keep within the descriptors
    this process may open. The soft limit is raised toward what the cap
    needs (up to the hard one); past that, the cap is lowered, with a
    warning: a listener that cannot accept spins on its ready socket while
    newcomers wait unanswered, where a cap closes idle ones or answers 503."""
    try:
        import resource
    except ImportError:  # (no such limit to fit)
        return connections
    need = ports * connections * FDS_PER_CONNECTION + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return connections
    want = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if want > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
    if soft >= need:
        return connections
    fit = max(1, (soft - FD_RESERVE) // (ports * FDS_PER_CONNECTION))
    log.warning("serving at most %d connections a port, not %d: this process may open %d files "
                "(raise `ulimit -n` for more)", fit, connections, soft)
    return fit


def _busy_answer() -> bytes:
    body = json.dumps({"error": "the mirror is serving as many connections as it takes; try again"}).encode()
    return _BUSY % (len(body), body)


class Listener(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], mirror: Mirror, roles: frozenset[str],
                 handler: type[BaseHTTPRequestHandler], max_connections: int = MIRROR_CONNECTIONS) -> None:
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        self.mirror = mirror
        self.roles = roles
        self.max_connections = max(1, max_connections)
        self.active: set[socket.socket] = set()
        self.waiting: dict[socket.socket, float] = {}  # connections between requests, since when
        self.active_lock = threading.Lock()
        self.refused = 0  # connections answered 503 (every slot carried a request)
        self.errors = 0  # handler exceptions (peers vanishing mid-request, hook bugs)
        super().__init__(addr, handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Count instead of printing a traceback: the library never prints."""
        self.errors += 1

    def process_request(self, request: Any, client_address: Any) -> None:
        if self._admit(request):
            super().process_request(request, client_address)
            return
        self.refused += 1
        with contextlib.suppress(OSError):
            request.setblocking(False)
            request.send(_busy_answer())
        self.shutdown_request(request)

    def _admit(self, sock: socket.socket) -> bool:
        """Room for ``sock``: under the cap, or once the oldest connection
        waiting for a request head is closed (its thread sees the end)."""
        with self.active_lock:
            if len(self.active) >= self.max_connections:
                if not self.waiting:
                    return False
                oldest = min(self.waiting, key=self.waiting.__getitem__)
                del self.waiting[oldest]
                self.active.discard(oldest)
                with contextlib.suppress(OSError):
                    oldest.shutdown(socket.SHUT_RDWR)
            self.active.add(sock)
            self.waiting[sock] = time.monotonic()
        return True

    def wait_head(self, sock: socket.socket) -> None:
        """``sock`` waits for its next request head (it may be closed for room)."""
        with self.active_lock:
            if sock in self.active:
                self.waiting.setdefault(sock, time.monotonic())

    def serving(self, sock: socket.socket) -> None:
        """``sock`` carries a request: it keeps its slot until the answer is sent."""
        with self.active_lock:
            self.waiting.pop(sock, None)

    def leave(self, sock: socket.socket) -> None:
        with self.active_lock:
            self.active.discard(sock)
            self.waiting.pop(sock, None)

    def close_all(self) -> None:
        """Drop every open connection."""
        with self.active_lock:
            conns = list(self.active)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
