"""JSON bodies of the Hub API routes the mirror serves (revision info, tree)."""

from __future__ import annotations

import datetime as _dt
from typing import Any

from .catalog import FileEntry, Snapshot


def iso_time(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _sibling(f: FileEntry, blobs: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"rfilename": f.path}
    if blobs:
        out["size"] = f.size
        out["blobId"] = f.blob_id
        if f.sha256:
            out["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
    return out


def repo_info(snap: Snapshot, *, blobs: bool) -> dict[str, Any]:
    """``GET /api/{models|datasets}/{repo}/revision/{rev}`` as the Hub answers it."""
    when = iso_time(snap.last_modified)
    info: dict[str, Any] = {
        "_id": snap.commit[:24],
        "id": snap.repo_id,
        "author": snap.repo_id.split("/")[0],
        "sha": snap.commit,
        "lastModified": when,
        "createdAt": when,
        "private": False,
        "gated": False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "siblings": [_sibling(f, blobs) for f in snap.files.values()],
        "usedStorage": sum(f.size for f in snap.files.values()),
    }
    if snap.repo_type == "model":
        info["modelId"] = snap.repo_id
    return info


def _tree_file(f: FileEntry) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "file", "oid": f.blob_id, "size": f.size, "path": f.path}
    if f.sha256:
        out["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
    return out


def tree_entries(snap: Snapshot, folder: str, *, recursive: bool) -> list[dict[str, Any]] | None:
    """Entries under ``folder`` ("" for the root), folders first as on the Hub;
    None when ``folder`` is not a folder of the snapshot."""
    if folder and folder not in snap.directories:
        return None
    key = ("tree", folder, recursive)
    cached: list[dict[str, Any]] | None = snap.memo.get(key)
    if cached is not None:
        return cached
    prefix = f"{folder}/" if folder else ""
    depth = prefix.count("/")

    def wanted(path: str) -> bool:
        return path.startswith(prefix) and (recursive or path.count("/") == depth)

    dirs = [
        {"type": "directory", "oid": snap.tree_oid(d), "size": 0, "path": d}
        for d in sorted(snap.directories)
        if wanted(d)
    ]
    files = [_tree_file(f) for p, f in snap.files.items() if wanted(p)]
    snap.memo[key] = dirs + files
    return dirs + files


def repo_list(repos: list[tuple[str, str]], repo_type: str, *, search: str | None,
              author: str | None, limit: int | None) -> list[dict[str, Any]]:
    """``GET /api/models`` / ``/api/datasets``: ids only (no scan, no hashing)."""
    out: list[dict[str, Any]] = []
    for rtype, repo_id in repos:
        org = repo_id.split("/")[0]
        if rtype != repo_type or (search and search.lower() not in repo_id.lower()):
            continue
        if author and author != org:
            continue
        item: dict[str, Any] = {"_id": repo_id, "id": repo_id, "author": org, "private": False}
        if repo_type == "model":
            item["modelId"] = repo_id
        out.append(item)
        if limit is not None and len(out) >= limit:
            break
    return out


def paths_info(snap: Snapshot, paths: list[str]) -> list[dict[str, Any]]:
    """``POST /api/{models|datasets}/{repo}/paths-info/{rev}``: the entries of the paths that exist."""
    out: list[dict[str, Any]] = []
    for raw in dict.fromkeys(paths):
        path = raw.strip("/")
        f = snap.files.get(path)
        if f is not None:
            out.append(_tree_file(f))
        elif path in snap.directories:
            out.append({"type": "directory", "oid": snap.tree_oid(path), "size": 0, "path": path})
    return out
