"""Repository references and the rules every name from outside must pass.

A :class:`RepoRef` names a repository and a revision; the validators keep
every revision, blob name and file path a server or archive sends fit to be a
path inside the home (no ``..``, nothing absolute). Where those paths live on
disk is the store's business (:mod:`qwenhome.store.layout`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ProtocolError, UsageError

REPO_TYPES = ("model", "dataset", "space")
# The plural a repository type takes in Hub URLs (and in hub-cache folder names).
TYPE_PLURAL = {"model": "models", "dataset": "datasets", "space": "spaces"}
PLURAL_TYPE = {v: k for k, v in TYPE_PLURAL.items()}

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_REV_RE = re.compile(r"^[A-Za-z0-9._/+-]{1,200}$")
DEFAULT_REVISION = "main"


def is_commit(rev: str) -> bool:
    return bool(_COMMIT_RE.match(rev))


def etag_kind(etag: str) -> str | None:
    """``sha256`` for a 64-hex etag, ``git-sha1`` for a 40-hex one, else None."""
    if _SHA256_RE.match(etag):
        return "sha256"
    if _COMMIT_RE.match(etag):
        return "git-sha1"
    return None


def validate_etag(etag: str) -> str:
    if etag_kind(etag) is None:
        raise ProtocolError(f"invalid blob id {etag!r} from source", code="bad-metadata")
    return etag


def validate_revision(rev: str) -> str:
    """Reject revisions that could escape ``refs/`` (``..``, absolute, NUL)."""
    if (
        not _REV_RE.match(rev)
        or rev.startswith("/")
        or rev.endswith("/")
        or any(part in ("", ".", "..") for part in rev.split("/"))
    ):
        raise UsageError(
            f"invalid revision {rev!r}",
            code="invalid-revision",
            hint="a revision is a branch, tag or 40-hex commit, without '..'",
        )
    return rev


# Characters no file path from outside may hold: NUL and the other control
# characters (a name is printed in progress and error lines, where ESC or CR
# would drive the terminal), backslashes (a separator elsewhere) and lone
# surrogates (no UTF-8 spelling: every URL and file name built from one fails).
_UNSAFE_CHAR = re.compile(r"[\x00-\x1f\x7f-\x9f\\\ud800-\udfff]")
NAME_MAX = 255  # bytes of one path component (Linux and macOS file systems)


def validate_relpath(path: str) -> str:
    """A repository file path as a server sends it; must stay inside the
    snapshot, and be one the home's file system can hold (checked before any
    write, so such a listing leaves nothing half-made)."""
    parts = path.split("/")
    bad = (
        not path
        or _UNSAFE_CHAR.search(path) is not None
        or path.startswith("/")
        or re.match(r"^[A-Za-z]:", path) is not None
        or any(part in ("", ".", "..") for part in parts)
        or len(path) > 1024
        or any(len(part) > NAME_MAX // 4 and len(part.encode()) > NAME_MAX for part in parts)
    )
    if bad:
        raise ProtocolError(
            f"refusing unsafe file path {path[:300]!r}{'…' if len(path) > 300 else ''} from source",
            code="unsafe-path",
            hint="the source sent a path that would leave the snapshot folder; it was not written",
        )
    return path


@dataclass(frozen=True, order=True)
class RepoRef:
    """A repository and an optional revision, e.g. ``Qwen/Qwen2.5-0.5B@main``."""

    repo_id: str
    repo_type: str = "model"
    revision: str | None = None

    @classmethod
    def parse(cls, text: str, repo_type: str | None = None) -> RepoRef:
        spec = text.strip()
        revision: str | None = None
        if "@" in spec:
            spec, revision = spec.split("@", 1)
            validate_revision(revision)
        rtype = repo_type or "model"
        head, _, rest = spec.partition("/")
        if head in PLURAL_TYPE and rest.count("/") == 1:
            rtype, spec = PLURAL_TYPE[head], rest
        parts = spec.split("/")
        if len(parts) != 2 or not all(_NAME_RE.match(p) for p in parts) or ".." in spec:
            raise UsageError(
                f"invalid repository id {text!r}",
                code="invalid-repo-id",
                hint="use Org/Name, optionally datasets/Org/Name, and @revision",
            )
        if rtype not in REPO_TYPES:
            raise UsageError(f"invalid repository type {rtype!r}", code="invalid-repo-id")
        return cls(spec, rtype, revision)

    @property
    def api_prefix(self) -> str:
        """``models``/``datasets``/``spaces``: the Hub API's path segment."""
        return TYPE_PLURAL[self.repo_type]

    @property
    def url_prefix(self) -> str:
        """Prefix of ``resolve`` URLs: nothing for models, ``datasets/`` otherwise."""
        return "" if self.repo_type == "model" else f"{TYPE_PLURAL[self.repo_type]}/"

    @property
    def rev(self) -> str:
        return self.revision or DEFAULT_REVISION

    def at(self, revision: str | None) -> RepoRef:
        return RepoRef(self.repo_id, self.repo_type, revision)

    def __str__(self) -> str:
        base = self.repo_id if self.repo_type == "model" else f"{TYPE_PLURAL[self.repo_type]}/{self.repo_id}"
        return f"{base}@{self.revision}" if self.revision else base

