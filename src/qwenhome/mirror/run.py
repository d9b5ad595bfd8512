"""The entry point ``qwenhome mirror serve`` calls."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from ..config import Settings
from ..errors import QwenhomeError, UsageError
from ..listen import bind_error
from .backends import Backend, FolderBackend, StoreBackend
from .cas import XetOptions
from .hashing import HashCache
from .listener import Limits
from .pullthrough import PullThroughBackend
from .server import MirrorServer

log = logging.getLogger(__name__)


def make_backend(settings: Settings, repos_dir: Path | None = None, *, pull_through: bool = False) -> Backend:
    """The store under ``settings.hub_cache`` (filled from ``settings.sources`` on
    demand with ``pull_through``), or plain repo folders under ``repos_dir``."""
    hashes = HashCache(settings.state_dir / "mirror" / "hashes.json")
    if pull_through:
        if repos_dir is not None:
            raise UsageError("--pull-through fills the store; it cannot be used with --repos",
                             code="invalid-arguments", hint="drop --repos, or drop --pull-through")
        if not settings.sources or settings.offline_forced:
            raise UsageError("--pull-through needs an upstream source and the network",
                             code="invalid-arguments",
                             hint="give --source URL (or HF_ENDPOINT), and unset HF_HUB_OFFLINE")
        return PullThroughBackend(settings, hashes=hashes)
    if repos_dir is not None:
        if not repos_dir.is_dir():
            raise UsageError(f"--repos {repos_dir} is not a folder", code="invalid-path",
                             hint="give a folder holding Org/Name/ repository folders")
        return FolderBackend(repos_dir, hashes=hashes)
    return StoreBackend(settings.hub_cache, state_dir=settings.state_dir, hashes=hashes)


def warm(backend: Backend) -> int:
    """Scan (and hash, for plain folders) every repository's ``main`` now, so the
    first client does not wait for hashing; returns how many were scanned."""
    done = 0
    for repo_type, repo_id in backend.repos():
        with contextlib.suppress(QwenhomeError, OSError):
            backend.snapshot(repo_type, repo_id, "main")
            done += 1
    return done


def run_mirror(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8090,
    token: str | None = None,
    repos_dir: Path | None = None,
    *,
    pull_through: bool = False,
    on_ready: Callable[[MirrorServer], None] | None = None,
    xet: XetOptions | None = None,
    limits: Limits = Limits(),
) -> None:
    """Serve until Ctrl+C, then return. Prints nothing; ``on_ready`` gets the
    running server (its ``url``) so the CLI can tell the user where it listens.

    With ``xet``, the mirror is also a Xet CAS; its records are kept in
    ``xet.folder`` (the CLI gives ``$QWEN_HOME/qwenhome/xet``). ``limits``
    bound what clients may hold of each port (connections, a head's time).

    With ``pull_through``, repositories the store lacks are fetched from
    ``settings.sources``; a source that is this very mirror would loop, so it is
    left out."""
    if pull_through and port:
        own = {host, "127.0.0.1", "localhost", "0.0.0.0", "::1", "::"}
        settings = settings.with_sources([s for s in settings.sources
                                          if not (urlsplit(s.url).port == port and s.host in own)])
    backend = make_backend(settings, repos_dir, pull_through=pull_through)
    try:
        server = MirrorServer(backend, host=host, port=port, token=token, xet=xet,
                              max_connections=limits.max_connections, head_timeout=limits.head_timeout)
    except (OSError, OverflowError, ValueError) as exc:  # (UnicodeError is a ValueError)
        raise bind_error(host, port, exc) from exc
    if not pull_through:  # (a pull-through warm-up would ask upstream about every repository)
        # Hash in the background: clients asking meanwhile wait for the same pass, not a second one.
        threading.Thread(target=warm, args=(server.backend,), name="qwenhome-mirror-warm", daemon=True).start()
    try:
        if on_ready is not None:
            on_ready(server)
        server.serve_forever()
    except KeyboardInterrupt:  # Ctrl+C: the way to stop it
        log.debug("mirror at %s stopped by the user", server.url)
    finally:
        server.stop()
