"""The entry point ``qwenhome mirror serve`` calls."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path

from ..config import Settings
from ..errors import QwenhomeError, UsageError
from .backends import Backend, FolderBackend, StoreBackend
from .hashing import HashCache
from .server import MirrorServer


def make_backend(settings: Settings, repos_dir: Path | None = None) -> Backend:
    """The store under ``settings.hub_cache``, or plain repo folders under ``repos_dir``."""
    hashes = HashCache(settings.state_dir / "mirror" / "hashes.json")
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
    on_ready: Callable[[MirrorServer], None] | None = None,
) -> None:
    """Serve until Ctrl+C, then return. Prints nothing; ``on_ready`` gets the
    running server (its ``url``) so the CLI can tell the user where it listens."""
    try:
        server = MirrorServer(make_backend(settings, repos_dir), host=host, port=port, token=token)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", code="address-in-use",
                         hint="choose another --port, or stop the process using it") from exc
    # Hash in the background: clients asking meanwhile wait for the same pass, not a second one.
    threading.Thread(target=warm, args=(server.backend,), name="qwenhome-mirror-warm", daemon=True).start()
    try:
        if on_ready is not None:
            on_ready(server)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
