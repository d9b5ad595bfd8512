"""Finding the file a ``resolve`` or ``cdn`` route names, and nowhere else."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import EntryNotFoundError
from .backends import Backend, inside
from .catalog import FileEntry, Snapshot
from .protocol import BadTarget, Route, parse_target


class EntryMissing(Exception):
    """The snapshot has no such file (or its bytes are not here); the 404 names the commit."""

    def __init__(self, snap: Snapshot) -> None:
        super().__init__("entry not found")
        self.snap = snap


def locate(backend: Backend, route: Route) -> tuple[Snapshot, FileEntry, str]:
    """The snapshot, entry and real path a resolve/cdn route refers to.

    Raises RepoNotFoundError / RevisionNotFoundError, or :class:`EntryMissing`
    carrying the snapshot (the 404 names its commit in ``X-Repo-Commit``).
    """
    snap = backend.snapshot(route.repo_type, route.repo_id, route.revision)
    entry = snap.files.get(route.path)
    if entry is None or not entry.source:
        raise EntryMissing(snap)
    real = os.path.realpath(entry.source)
    if not inside(real, str(backend.root)):
        raise EntryMissing(snap)
    return snap, entry, real


def resolve_target(backend: Backend, target: str) -> Path:
    """The real file a ``resolve`` request target would serve; raises BadTarget or
    a RemoteError (repo/revision/entry not found) otherwise.

    This is exactly the server's own lookup, exposed for in-process tests.
    """
    route = parse_target(target)
    if route.kind != "resolve":
        raise BadTarget("not a resolve route")
    try:
        return Path(locate(backend, route)[2])
    except EntryMissing:
        raise EntryNotFoundError(f"{route.path!r} not found", path=route.path) from None
