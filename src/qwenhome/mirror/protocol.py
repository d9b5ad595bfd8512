"""The Hub protocol as the mirror speaks it: routes, header names, ranges, errors.

Request targets are decoded segment by segment (clients send the revision and
tree paths with ``/`` encoded as ``%2F``), and every file path is checked with
:func:`qwenhome.repo.ref.validate_relpath` after decoding, so encoded
``..``, NUL bytes, backslashes and absolute paths never reach the file system.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote

from ..errors import ProtocolError, UsageError
from ..repo.ref import validate_relpath

# Header names, as huggingface_hub reads them (constants.py).
X_REPO_COMMIT = "X-Repo-Commit"
X_LINKED_ETAG = "X-Linked-Etag"
X_LINKED_SIZE = "X-Linked-Size"
X_ERROR_CODE = "X-Error-Code"
X_ERROR_MESSAGE = "X-Error-Message"

# X-Error-Code values huggingface_hub maps to typed errors (utils/_http.py).
REPO_NOT_FOUND = "RepoNotFound"
REVISION_NOT_FOUND = "RevisionNotFound"
ENTRY_NOT_FOUND = "EntryNotFound"
# Codes of the mirror's own (the Hub's clients read only the status and X-Error-Message for these).
BAD_REQUEST = "BadRequest"
METHOD_NOT_ALLOWED = "MethodNotAllowed"

_API_TYPES = {"models": "model", "datasets": "dataset"}
ROLES = {"reconstruction": "cas", "cas-file": "cas", "cas-xorb": "cas", "xorb": "xorb"}
_XET_HASH = re.compile(r"[0-9a-f]{64}")
_REV_ROUTES = ("revision", "xet-read-token", "xet-write-token", "paths-info")


class BadTarget(Exception):
    """The request target is malformed or unsafe; answered with 400/404, never served."""


@dataclass(frozen=True)
class Route:
    """A parsed request target.

    ``kind`` is ``list`` (repositories of a type), ``info`` (repo/revision
    metadata), ``tree``, ``paths-info`` (POST), ``resolve``, ``cdn`` (the
    redirect target for LFS files in redirect mode), or a Xet route:
    ``xet-read-token``/``xet-write-token``, ``reconstruction``, ``cas-file``
    and ``cas-xorb`` (existence checks), ``xorb`` (signed xorb bytes).
    """

    kind: str
    repo_type: str
    repo_id: str
    revision: str
    path: str = ""  # file (resolve, cdn) or folder (tree) inside the repository
    query: dict[str, list[str]] = field(default_factory=dict, compare=False)
    signature: str = ""  # cdn only
    key: str = ""  # Xet routes: the file or xorb hash (64 lowercase hex digits)
    version: int = 0  # reconstruction: the API version (1 or 2)

    @property
    def role(self) -> str:
        """Which server answers it: ``hub`` (the Hub's API), ``cas`` (reconstructions) or ``xorb`` (xorb bytes)."""
        return ROLES.get(self.kind, "hub")

    def flag(self, name: str) -> bool:
        value = self.param(name)
        return value is not None and value.lower() in ("1", "true", "yes")

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None


def _decode(segment: str) -> str:
    try:
        return unquote(segment, errors="strict")
    except UnicodeDecodeError:
        raise BadTarget("undecodable path segment") from None


def _file_path(segments: list[str]) -> str:
    path = "/".join(_decode(s) for s in segments)
    try:
        return validate_relpath(path)
    except (ProtocolError, UsageError):
        raise BadTarget(f"unsafe path {path!r}") from None


def parse_target(target: str) -> Route:
    """Parse a request target (path and query) into a :class:`Route`.

    Raises :class:`BadTarget` for anything that is not a well-formed Hub route
    with a safe file path. Repository ids and revisions are validated later by
    the backend (they map to RepoNotFound / RevisionNotFound).
    """
    if "\x00" in target or "\\" in target or len(target) > 8192:
        raise BadTarget("invalid characters in target")
    raw_path, _, raw_query = target.partition("?")
    if not raw_path.startswith("/"):
        raise BadTarget("target must be absolute-path form")
    query = parse_qs(raw_query, keep_blank_values=True) if raw_query else {}
    segs = raw_path[1:].split("/")
    if segs and segs[-1] == "" and len(segs) > 1:
        segs = segs[:-1]  # tolerate one trailing slash on API routes

    if len(segs) == 2 and segs[0] == "api" and segs[1] in _API_TYPES:
        return Route("list", _API_TYPES[segs[1]], "", "", query=query)
    if len(segs) >= 4 and segs[0] == "api" and segs[1] in _API_TYPES:
        repo_type = _API_TYPES[segs[1]]
        repo_id = f"{_decode(segs[2])}/{_decode(segs[3])}"
        rest = segs[4:]
        if not rest:
            return Route("info", repo_type, repo_id, "main", query=query)
        if rest[0] in _REV_ROUTES and len(rest) >= 2:
            # The revision is sent percent-encoded as one segment; accept raw slashes too.
            kind = "info" if rest[0] == "revision" else rest[0]
            return Route(kind, repo_type, repo_id, "/".join(_decode(s) for s in rest[1:]), query=query)
        if rest[0] == "tree" and len(rest) >= 2:
            path = _file_path(rest[2:]) if len(rest) > 2 else ""
            return Route("tree", repo_type, repo_id, _decode(rest[1]), path, query=query)
        raise BadTarget("unknown API route")

    xet = _xet_route(segs, query)
    if xet is not None:
        return xet
    if len(segs) >= 7 and segs[0] == "cdn":
        cdn_type = _API_TYPES.get(segs[2])
        if cdn_type is None:
            raise BadTarget("unknown repository type")
        repo_id = f"{_decode(segs[3])}/{_decode(segs[4])}"
        return Route("cdn", cdn_type, repo_id, _decode(segs[5]), _file_path(segs[6:]),
                     query=query, signature=segs[1])

    repo_type = "model"
    if segs and segs[0] == "datasets":
        repo_type, segs = "dataset", segs[1:]
    if len(segs) >= 5 and segs[2] == "resolve":
        repo_id = f"{_decode(segs[0])}/{_decode(segs[1])}"
        return Route("resolve", repo_type, repo_id, _decode(segs[3]), _file_path(segs[4:]), query=query)
    raise BadTarget("unknown route")


def _xet_route(segs: list[str], query: dict[str, list[str]]) -> Route | None:
    """The CAS's routes (``/v1|v2/reconstructions/H``, ``/v1/files/H``, ``/v1/xorbs/default/H``) and
    the xorb bytes (``/xorb/default/H``); None for other targets, BadTarget for a malformed hash."""
    if len(segs) == 3 and segs[0] in ("v1", "v2") and segs[1] == "reconstructions":
        kind, key, version = "reconstruction", segs[2], int(segs[0][1])
    elif len(segs) == 3 and segs[:2] == ["v1", "files"]:
        kind, key, version = "cas-file", segs[2], 0
    elif len(segs) == 4 and segs[:3] == ["v1", "xorbs", "default"]:
        kind, key, version = "cas-xorb", segs[3], 0
    elif len(segs) == 3 and segs[:2] == ["xorb", "default"]:
        kind, key, version = "xorb", segs[2], 0
    else:
        return None
    if not _XET_HASH.fullmatch(key):
        raise BadTarget("a Xet hash is 64 lowercase hex digits")
    return Route(kind, "", "", "", query=query, key=key, version=version)


_RANGE_RE = re.compile(r"^bytes=([0-9]*)-([0-9]*)$")  # ASCII digits ("\d" takes any script's)
# No file is 10**18 bytes, so a longer number means "beyond any file" and is
# never converted (Python refuses strings of more than 4,300 digits).
_MAX_DIGITS = 18


class BadQuery(BadTarget):
    """A number in the query string is not one: answered 400, never served."""


def _bounded(digits: str) -> int:
    """ASCII ``digits`` as an int, saturating at ``10**18``."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS


def count_param(route: Route, name: str) -> int | None:
    """Query parameter ``name`` as a count (limit, cursor); None when absent or
    empty; raises :class:`BadQuery` when it is not a whole number of ASCII digits."""
    value = route.param(name)
    if not value:
        return None
    if not (value.isascii() and value.isdigit()):
        raise BadQuery(f"{name} must be a whole number, not {value[:40]!r}")
    return _bounded(value)


class Unsatisfiable(Exception):
    """The Range cannot be served: answer 416 with ``Content-Range: bytes */size``."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end_inclusive)`` for a single satisfiable byte range, None to send
    the whole body (no header, a malformed one, or several ranges), or raises
    :class:`Unsatisfiable`."""
    if not header:
        return None
    m = _RANGE_RE.match(header.strip().replace(" ", ""))
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        n = _bounded(last)
        if n == 0 or size == 0:
            raise Unsatisfiable
        return max(0, size - n), size - 1
    start = _bounded(first)
    end = _bounded(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        raise Unsatisfiable
    return start, min(end, size - 1)
