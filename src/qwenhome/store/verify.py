"""Re-hash blobs against the hash their name records (sha256 for LFS files,
git blob oid for small ones); optionally remove bad ones so a pull refetches."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cache import Store, writing
from .layout import RepoRef, etag_kind

CHUNK = 4 << 20


def hash_file(path: Path, kind: str) -> str:
    size = path.stat().st_size
    h = hashlib.sha256() if kind == "sha256" else hashlib.sha1(b"blob %d\0" % size)
    buf = bytearray(CHUNK)
    mv = memoryview(buf)
    with path.open("rb", buffering=0) as f:
        while n := f.readinto(mv):
            h.update(mv[:n])
    return h.hexdigest()


@dataclass
class BlobProblem:
    blob: str
    reason: str
    paths: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"blob": self.blob, "reason": self.reason, "paths": self.paths}


@dataclass
class VerifyReport:
    repo: str
    checked: int = 0
    bytes: int = 0
    bad: list[BlobProblem] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: int = 0  # blobs whose name is not a hash we can check

    @property
    def ok(self) -> bool:
        return not self.bad

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo": self.repo,
            "ok": self.ok,
            "checked": self.checked,
            "bytes": self.bytes,
            "skipped": self.skipped,
            "bad": [b.to_dict() for b in self.bad],
            "removed": self.removed,
        }


def _links_to(store: Store, ref: RepoRef) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    snaps = store.repo_dir(ref) / "snapshots"
    if not snaps.is_dir():
        return out
    for dirpath, _dirs, names in os.walk(snaps):
        for name in names:
            p = Path(dirpath) / name
            if p.is_symlink():
                out.setdefault(Path(os.readlink(p)).name, []).append(p.relative_to(snaps).as_posix())
    return out


def verify_repo(store: Store, ref: RepoRef, *, remove_bad: bool = False) -> VerifyReport:
    report = VerifyReport(str(ref))
    blobs = store.repo_dir(ref) / "blobs"
    if not blobs.is_dir():
        return report
    links = _links_to(store, ref)
    for blob in sorted(blobs.iterdir()):
        if not blob.is_file():
            continue
        kind = etag_kind(blob.name)
        if kind is None:
            report.skipped += 1
            continue
        report.checked += 1
        report.bytes += blob.stat().st_size
        actual = hash_file(blob, kind)
        if actual != blob.name:
            report.bad.append(BlobProblem(blob.name, f"{kind} is {actual}", links.get(blob.name, [])))
            if remove_bad:
                with writing(blob):
                    blob.unlink(missing_ok=True)
                report.removed.append(blob.name)
    return report
