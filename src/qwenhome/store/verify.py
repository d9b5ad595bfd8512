"""Re-hash blobs against the hash their name records (sha256 for LFS files,
git blob oid for small ones); optionally remove bad ones so a pull refetches."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..repo.hashing import hash_file
from ..repo.ref import RepoRef, etag_kind
from .cache import Store, writing


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


def verify_repo(store: Store, ref: RepoRef, *, remove_bad: bool = False) -> VerifyReport:
    """Re-hash every blob of ``ref``; a file a snapshot's manifest lists whose
    blob is gone (deleted, or no longer a regular file) is bad too, reason
    ``missing``: an ``ok`` must mean every snapshot can be read."""
    report = VerifyReport(str(ref))
    for commit in store.commits(ref):
        missing = store.missing_files(ref, commit)
        if missing:
            manifest = store.load_manifest(ref, commit)
            etags = {f.path: f.etag for f in manifest.files} if manifest else {}
            report.bad += [BlobProblem(etags.get(path, "-"), "missing", [path]) for path in missing]
    blobs = store.blob_files(ref)
    if not blobs:
        return report
    links: dict[str, list[str]] = {}
    for path, name in store.snapshot_links(ref):
        links.setdefault(name, []).append(path)
    for blob in blobs:
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
