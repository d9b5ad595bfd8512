"""``MirrorServer``: a read-only Hub-protocol server over a backend, optionally its own Xet CAS.

The routes and their answers are in :mod:`.handler`; this class owns the
listening sockets (one, or one per role when the CAS or the xorb bytes get
ports of their own), the signing keys, the counters, and the lifecycle.
"""

from __future__ import annotations

import hmac
import itertools
import re
import secrets
import threading
from collections.abc import Iterator
from types import TracebackType
from urllib.parse import quote

from ..config import MIRROR_CONNECTIONS, MIRROR_HEAD_TIMEOUT
from .backends import Backend
from .cas.service import XetOptions, XetService
from .catalog import FileEntry, Snapshot
from .handler import Handler
from .hooks import Hooks
from .listener import Listener, fit_descriptors
from .protocol import Route
from .pullthrough import PullThroughBackend

_API_PREFIX = {"model": "models", "dataset": "datasets"}
_HOST_RE = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]{1,253})(?::\d{1,5})?")
ROLES = ("hub", "cas", "xorb")


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class MirrorServer:
    """A Hub-protocol server over ``backend``; ``port=0`` picks a free port.

    ``redirect_lfs`` answers ``resolve`` for LFS files with a ``302`` to
    ``http://{cdn_host}:{port}/cdn/...`` (a signed URL that needs no token), like
    the Hub's CDN, so clients can be checked for dropping their token across hosts.

    ``xet`` makes the mirror answer as the Hub does for Xet files, being its own
    CAS (:mod:`.cas`); its blobs are chunked in the background from :meth:`start`.
    """

    def __init__(
        self,
        backend: Backend,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        hooks: Hooks | None = None,
        *,
        redirect_lfs: bool = False,
        cdn_host: str = "localhost",
        tree_page_size: int = 1000,
        idle_timeout: float = 60.0,
        head_timeout: float = MIRROR_HEAD_TIMEOUT,
        max_connections: int = MIRROR_CONNECTIONS,
        first_byte_wait: float = 5.0,
        xet: XetOptions | None = None,
    ) -> None:
        self.backend = backend
        # A pull-through backend fills missing files from its sources while streaming them.
        self.pull_through = backend if isinstance(backend, PullThroughBackend) else None
        self.first_byte_wait = first_byte_wait
        self.token = token or None
        self.hooks = hooks
        self.redirect_lfs = redirect_lfs
        self.cdn_host = cdn_host
        self.tree_page_size = max(1, tree_page_size)
        self.idle_timeout = idle_timeout
        self.head_timeout = head_timeout  # seconds a request head may take from its first byte (slow-loris)
        self.max_connections = max_connections
        self.conn_ids: Iterator[int] = itertools.count(1)  # shared by all listeners: hooks key requests by it
        self._secret = secrets.token_bytes(32)
        self._stats: dict[str, list[int]] = {}
        self._stats_lock = threading.Lock()
        self.xet_options = xet
        self.xet: XetService | None = None
        self._listeners: dict[str, Listener] = {}
        self._httpd = self._bind(host, port, xet)
        self.host = host
        self.port: int = self._httpd.port
        self._threads: dict[Listener, threading.Thread] = {}
        self.xet = XetService(backend, xet) if xet is not None else None

    def _bind(self, host: str, port: int, xet: XetOptions | None) -> Listener:
        """Bind the mirror's port and, when asked, the CAS's and the xorbs' own; returns the mirror's."""
        own: list[tuple[int, set[str]]] = []  # (port, roles) of the extra listeners
        main = {"hub"}
        cas_port = xet.cas_port if xet is not None else None
        xorb_port = xet.xorb_port if xet is not None else None
        if cas_port is None:
            main.add("cas")
        else:
            own.append((cas_port, {"cas"}))
        if xorb_port is None:
            (own[0][1] if cas_port is not None else main).add("xorb")
        elif cas_port is not None and xorb_port == cas_port != 0:
            own[0][1].add("xorb")
        else:
            own.append((xorb_port, {"xorb"}))
        bound: list[Listener] = []
        self.max_connections = fit_descriptors(self.max_connections, 1 + len(own))
        try:
            for p, roles in [(port, main), *own]:
                listener = Listener((host, p), self, frozenset(roles), Handler, self.max_connections)
                bound.append(listener)
                for role in roles:
                    self._listeners[role] = listener
        except BaseException:
            for listener in bound:
                listener.server_close()
            raise
        return bound[0]

    @property
    def url(self) -> str:
        """The endpoint clients use (``HF_ENDPOINT``)."""
        return f"http://{_bracket(self._own_host())}:{self.port}"

    def _own_host(self) -> str:
        return "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host

    def port_of(self, role: str) -> int:
        """The port serving ``role`` (``hub``, ``cas`` or ``xorb``)."""
        return self._listeners[role].port

    def base_url(self, role: str, host_header: str | None, here: Listener) -> str:
        """``http://host:port`` of ``role`` for a client that reached listener ``here`` as ``host_header``.

        The client's own name for the mirror is kept (it may reach it through a
        name or a forwarded port this process does not know), unless a host is
        configured for the role; a malformed ``Host`` is not echoed.
        """
        target = self._listeners[role]
        override = {"cas": self.xet_options.cas_host if self.xet_options else None,
                    "xorb": self.xet_options.xorb_host if self.xet_options else None}.get(role)
        m = _HOST_RE.fullmatch((host_header or "").strip())
        if override is None and m is not None and target is here:
            return f"http://{m.group(0)}"
        name = override or (m.group("host") if m is not None else self._own_host())
        return f"http://{_bracket(name)}:{target.port}"

    # -- counters ------------------------------------------------------------------------
    def count(self, kind: str, nbytes: int) -> None:
        with self._stats_lock:
            row = self._stats.setdefault(kind, [0, 0])
            row[0] += 1
            row[1] += nbytes

    def stats(self) -> dict[str, tuple[int, int]]:
        """Per route kind (``resolve``, ``reconstruction``, ``xorb``, ...): requests answered and body bytes sent."""
        with self._stats_lock:
            return {k: (v[0], v[1]) for k, v in self._stats.items()}

    # -- signed CDN URLs ----------------------------------------------------------
    def _sign(self, repo_type: str, repo_id: str, commit: str, path: str) -> str:
        msg = f"{repo_type}\x00{repo_id}\x00{commit}\x00{path}".encode()
        return hmac.new(self._secret, msg, "sha256").hexdigest()[:32]

    def cdn_location(self, snap: Snapshot, entry: FileEntry) -> str:
        sig = self._sign(snap.repo_type, snap.repo_id, snap.commit, entry.path)
        org, name = snap.repo_id.split("/")
        return (f"http://{self.cdn_host}:{self.port}/cdn/{sig}/{_API_PREFIX[snap.repo_type]}/"
                f"{quote(org)}/{quote(name)}/{snap.commit}/{quote(entry.path)}")

    def check_signature(self, route: Route) -> bool:
        expected = self._sign(route.repo_type, route.repo_id, route.revision, route.path)
        return hmac.compare_digest(expected.encode(), route.signature.encode("utf-8", "surrogateescape"))

    # -- lifecycle -------------------------------------------------------------------
    def _listeners_unique(self) -> list[Listener]:
        return list(dict.fromkeys([self._httpd, *self._listeners.values()]))

    def _run(self, listener: Listener, poll: float) -> None:
        thread = threading.Thread(target=listener.serve_forever, kwargs={"poll_interval": poll},
                                  name=f"qwenhome-mirror-{listener.port}", daemon=True)
        thread.start()
        self._threads[listener] = thread

    def start(self) -> MirrorServer:
        """Serve in background threads; returns self."""
        if not self._threads:
            if self.xet is not None:
                self.xet.start()
            for listener in self._listeners_unique():
                self._run(listener, 0.05)
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`stop` (or KeyboardInterrupt)."""
        if self.xet is not None:
            self.xet.start()
        for listener in self._listeners_unique()[1:]:
            self._run(listener, 0.5)
        self._httpd.serve_forever(poll_interval=0.5)

    def stop_listener(self, role: str) -> None:
        """Close the port serving ``role`` (when it has its own): its host becomes unreachable."""
        listener = self._listeners[role]
        if listener is self._httpd:
            raise ValueError(f"{role} is served on the mirror's own port")
        self._close(listener)

    def _close(self, listener: Listener) -> None:
        thread = self._threads.pop(listener, None)
        if thread is not None and thread.is_alive():  # (shutdown() waits for a loop that runs)
            listener.shutdown()
            thread.join(timeout=5)
        listener.close_all()
        listener.server_close()

    def stop(self) -> None:
        """Stop accepting, drop open connections, release the ports, stop chunking."""
        for listener in self._listeners_unique():
            self._close(listener)
        if self.xet is not None:
            self.xet.stop()

    def __enter__(self) -> MirrorServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
