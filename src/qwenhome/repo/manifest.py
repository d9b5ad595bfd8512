"""What a snapshot should contain: the per-file sizes and hashes a source listed.

A manifest is source-neutral: files are identified by size and content hash
(sha256, and the git blob oid where the Hub gives one), never by commit, so the
same file can come from the Hub, a mirror or ModelScope.

A source without commits of its own (ModelScope, a plain folder) gets a
deterministic commit id derived from its listing (:func:`listing_commit`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ProtocolError
from .ref import validate_relpath


@dataclass(frozen=True)
class RepoFile:
    path: str
    size: int
    blob_id: str | None = None  # git blob sha1 (Hub); None when the source has none
    sha256: str | None = None  # LFS sha256 (Hub) or per-file sha256 (ModelScope)

    @property
    def etag(self) -> str:
        """The blob name in the cache, as huggingface_hub names it."""
        if self.sha256:
            return self.sha256
        if self.blob_id:
            return self.blob_id
        raise ValueError(f"{self.path}: no hash to name its blob")

    @property
    def is_lfs(self) -> bool:
        return self.sha256 is not None


def check_tree(files: Iterable[RepoFile], *, code: str = "bad-metadata") -> None:
    """Refuse a listing no snapshot folder can hold: a path named twice, or
    named both as a file and as a folder (``a`` and ``a/b``). Checked before
    anything is written, so such a listing leaves nothing half-made."""
    paths: set[str] = set()
    for f in files:
        if f.path in paths:
            raise ProtocolError(f"the file list names {f.path!r} twice", code=code, hint=_TREE_HINT)
        paths.add(f.path)
    for path in sorted(paths):
        parts = path.split("/")
        for i in range(1, len(parts)):
            folder = "/".join(parts[:i])
            if folder in paths:
                raise ProtocolError(f"the file list names {folder!r} both as a file and as the folder of {path!r}",
                                    code=code, hint=_TREE_HINT)


# No file is this large: a bigger size is a lie, refused before any space is asked for.
MAX_FILE_SIZE = 10**18


def listed_size(value: Any) -> int | None:
    """A file size as a listing gives it (a JSON number, or a decimal string
    as in a header), or None when it is not one: negative, fractional,
    infinite, a boolean, not ASCII digits, absurdly large."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():  # (1e3; NaN and the infinities are not)
        value = int(value)
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        value = int(value)
    return value if isinstance(value, int) and 0 <= value < MAX_FILE_SIZE else None


_TREE_HINT = "the source sent a file list no folder can hold; nothing was written; try another source"


@dataclass
class Manifest:
    repo_id: str
    repo_type: str
    commit: str
    files: list[RepoFile] = field(default_factory=list)
    source: str = ""
    # False: the files are what another tool's cache held of a Hub commit
    # (adopted), maybe a part of it; a source's listing confirms it.
    confirmed: bool = True

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> str:
        return json.dumps(
            {
                "repo_id": self.repo_id,
                "repo_type": self.repo_type,
                "commit": self.commit,
                "source": self.source,
                **({} if self.confirmed else {"confirmed": False}),
                # By hand: asdict deep-copies every field, a cost on each pull of many files.
                "files": [{"path": f.path, "size": f.size, "blob_id": f.blob_id, "sha256": f.sha256}
                          for f in self.files],
            },
            separators=(",", ":"),  # no indent: the C encoder, ten times faster on many files
        )

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data: dict[str, Any] = json.loads(text)
        files = [
            RepoFile(validate_relpath(f["path"]), int(f["size"]), f.get("blob_id"), f.get("sha256"))
            for f in data["files"]
        ]
        return cls(data["repo_id"], data["repo_type"], data["commit"], files, data.get("source", ""),
                   data.get("confirmed") is not False)


def listing_commit(repo_id: str, revision: str, files: Iterable[RepoFile]) -> str:
    """A deterministic 40-hex id for a snapshot listed by a source without Hub
    commits (ModelScope, an adopted folder): the same files give the same id,
    any change gives a new one. (``revision`` does not enter it: the content does.)"""
    import hashlib  # here: loading it costs every command's start, and few need this

    h = hashlib.sha1(f"qwenhome-modelscope\n{repo_id}\n".encode())
    for f in sorted(files, key=lambda f: f.path):
        h.update(f"{f.path}\x00{f.size}\x00{f.sha256}\n".encode())
    return h.hexdigest()
