"""One listening socket of the mirror, and what its request handler may ask of the mirror.

A mirror listens on one port, or on one per **role** (``hub``, ``cas``,
``xorb``: :attr:`.protocol.Route.role`) when the Xet CAS and the xorb bytes
get ports of their own; each :class:`Listener` knows which roles it serves.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from .backends import Backend
from .cas.service import XetService
from .catalog import FileEntry, Snapshot
from .hooks import Hooks
from .protocol import Route
from .pullthrough import PullThroughBackend


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
    first_byte_wait: float
    conn_ids: Iterator[int]

    def cdn_location(self, snap: Snapshot, entry: FileEntry) -> str: ...

    def check_signature(self, route: Route) -> bool: ...

    def base_url(self, role: str, host_header: str | None, here: Listener) -> str: ...

    def count(self, kind: str, nbytes: int) -> None: ...


class Listener(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], mirror: Mirror, roles: frozenset[str],
                 handler: type[BaseHTTPRequestHandler]) -> None:
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        self.mirror = mirror
        self.roles = roles
        self.active: set[socket.socket] = set()
        self.active_lock = threading.Lock()
        self.errors = 0  # handler exceptions (peers vanishing mid-request, hook bugs)
        super().__init__(addr, handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Count instead of printing a traceback: the library never prints."""
        self.errors += 1

    def close_all(self) -> None:
        """Drop every open connection."""
        with self.active_lock:
            conns = list(self.active)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
