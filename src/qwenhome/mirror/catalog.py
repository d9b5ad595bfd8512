"""What a mirror knows about one repository revision: files, sizes, hashes, commit.

Backends build a :class:`Snapshot`; the server only reads it. Git object ids
are computed the way git and the Hub compute them, so clients that verify
small files by their blob oid and LFS files by sha256 accept what we serve.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from ..repo.hashing import git_blob_header

# Files at least this large, or with these suffixes, are "LFS" files: the Hub
# lists them with an ``lfs`` block and names their blob by sha256.
LFS_THRESHOLD = 1024 * 1024
LFS_SUFFIXES = (
    ".safetensors", ".bin", ".gguf", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".msgpack",
    ".model", ".tflite", ".npz", ".npy", ".pkl", ".zip", ".tar", ".gz",
)


def is_lfs_name(path: str, size: int) -> bool:
    return size >= LFS_THRESHOLD or path.lower().endswith(LFS_SUFFIXES)


def git_blob_oid(data: bytes) -> str:
    """The git object id of ``data`` stored as a blob."""
    return hashlib.sha1(git_blob_header(len(data)) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The LFS pointer file git stores in place of a large file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class FileEntry:
    """One file of a snapshot and where its bytes live on this machine."""

    path: str
    size: int
    blob_id: str  # git oid of the content (small files) or of the LFS pointer
    sha256: str | None  # set for LFS files only, as on the Hub
    source: str  # real path of the file to send ("" when listed but absent); str: scans make thousands

    @property
    def etag(self) -> str:
        """The Hub's ETag: sha256 for LFS files, the git blob oid otherwise."""
        return self.sha256 or self.blob_id

    @property
    def pointer_size(self) -> int:
        return len(lfs_pointer(self.sha256, self.size)) if self.sha256 else 0

    @classmethod
    def lfs(cls, path: str, size: int, sha256: str, source: str) -> FileEntry:
        return cls(path, size, git_blob_oid(lfs_pointer(sha256, size)), sha256, source)


def tree_commit_id(files: dict[str, FileEntry]) -> str:
    """A deterministic 40-hex id for a file tree (not a real git commit)."""
    h = hashlib.sha1(b"qwenhome-mirror-tree\n")
    for path in sorted(files):
        f = files[path]
        h.update(f"{path}\x00{f.blob_id}\x00{f.size}\n".encode())
    return h.hexdigest()


@dataclass(frozen=True)
class Snapshot:
    """A repository at one commit, as the server presents it."""

    repo_type: str  # model | dataset
    repo_id: str
    commit: str
    files: dict[str, FileEntry]
    last_modified: float  # unix time
    directories: frozenset[str] = field(default=frozenset())

    @classmethod
    def build(
        cls, repo_type: str, repo_id: str, files: dict[str, FileEntry], last_modified: float,
        commit: str | None = None,
    ) -> Snapshot:
        dirs: set[str] = set()
        for path in files:
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add("/".join(parts[:i]))
        return cls(repo_type, repo_id, commit or tree_commit_id(files), dict(sorted(files.items())),
                   last_modified, frozenset(dirs))

    # Derived data computed once per snapshot (listings are paginated, so asked for often).
    memo: dict[object, Any] = field(default_factory=dict, compare=False, repr=False)

    def tree_oid(self, directory: str) -> str:
        """A deterministic id for a folder, derived from what it holds."""
        oids: dict[str, str] | None = self.memo.get("tree_oids")
        if oids is None:
            hashers: dict[str, Any] = {d: hashlib.sha1(b"tree\n") for d in self.directories}
            for path, f in self.files.items():  # sorted, so each folder hashes in path order
                line = f"{path}\x00{f.blob_id}\n".encode()
                parts = path.split("/")[:-1]
                for i in range(1, len(parts) + 1):
                    hashers["/".join(parts[:i])].update(line)
            oids = {d: h.hexdigest() for d, h in hashers.items()}
            self.memo["tree_oids"] = oids
        return oids[directory]
