"""Move one snapshot to a machine without network: ``export`` writes a tar,
``import`` verifies and places it.

The archive is a fragment of a hub cache, readable even without qwenhome
(``tar -xf FILE -C $HF_HUB_CACHE``), led by a manifest::

    qwenhome-export.json                       format, repo, commit, refs, files
    models--Org--Name/blobs/<etag>             each blob once
    models--Org--Name/snapshots/<commit>/<p>   relative symlinks to the blobs
    models--Org--Name/refs/<name>              the commit

Import trusts nothing in the file: the manifest must come first and is
validated (repo id, commit, paths, hash names); every other member name must
be a safe path inside that repository folder, and only ``blobs/<etag>``
regular files of listed blobs are read. Nothing is ever extracted by member
name: each blob streams into a unique temporary file in the store, is hashed
(sha256 or git blob oid, as its name says) and size-checked, and only then is
renamed into place, so a blob is either complete and verified or absent.
Snapshot links and refs are made from the manifest, after every blob is in.
"""

from __future__ import annotations

import json
import logging
import os
import tarfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..errors import IntegrityError, ProtocolError, QwenhomeError, StoreError, UsageError
from ..repo.hashing import Verifier
from ..repo.manifest import Manifest, RepoFile, check_tree
from ..repo.ref import (
    RepoRef,
    etag_kind,
    is_commit,
    validate_etag,
    validate_relpath,
    validate_revision,
)
from .cache import Store, translate_os_error, writing
from .layout import BLOBS, REFS, SNAPSHOTS, folder_name, link_target

log = logging.getLogger(__name__)

FORMAT = "qwenhome-export/1"
MANIFEST_MEMBER = "qwenhome-export.json"
MAX_MANIFEST = 64 << 20
BUF = 1 << 20


@dataclass
class ArchiveReport:
    repo: str
    commit: str
    file: str
    files: int = 0
    blobs: int = 0
    bytes: int = 0
    blobs_present: int = 0  # import: already in the store
    refs: list[str] = field(default_factory=list)
    snapshot: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__) | {"seconds": round(self.seconds, 3)}


# -- export ----------------------------------------------------------------------------------
def _snapshot_entries(store: Store, ref: RepoRef, snap: Path) -> list[tuple[str, int, str]]:
    """(path, size, etag) of every file of a complete snapshot, from its links."""
    out = []
    for dirpath, dirnames, filenames in os.walk(snap):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(snap).as_posix()
            if not full.is_symlink():
                raise StoreError(f"{full} is not a link to a blob; cannot export it", code="export-unsupported",
                                 hint="snapshots made without symlinks cannot be exported")
            etag = os.path.basename(os.readlink(full))
            if etag_kind(etag) is None or not store.has_blob(ref, etag):
                raise StoreError(f"{rel}: its blob is missing", code="snapshot-incomplete")
            out.append((rel, store.blob_path(ref, etag).stat().st_size, etag))
    return out


def _info(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.size, ti.type, ti.linkname = size, kind, link
    ti.mode = 0o777 if kind == tarfile.SYMTYPE else 0o644
    ti.mtime = 0  # reproducible archives
    return ti


def export_snapshot(store: Store, ref: RepoRef, out: Path, *, compress: bool | None = None) -> ArchiveReport:
    """Write the complete local snapshot of ``ref`` to ``out`` (atomically)."""
    t0 = time.monotonic()
    snap = store.snapshot_path(ref)
    commit = snap.name
    entries = _snapshot_entries(store, ref, snap)
    refs = [validate_revision(name) for name, points_to in store.refs(ref).items() if points_to == commit]
    doc = {
        "format": FORMAT,
        "repo_id": ref.repo_id,
        "repo_type": ref.repo_type,
        "commit": commit,
        "refs": refs,
        "files": [{"path": p, "size": n, "etag": e} for p, n, e in entries],
    }
    compress = out.name.endswith((".gz", ".tgz")) if compress is None else compress
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    folder = folder_name(ref)
    rep = ArchiveReport(str(ref), commit, str(out), files=len(entries), refs=refs)
    try:
        with _open_for_write(tmp, compress) as tar:
            data = json.dumps(doc, indent=1).encode()
            tar.addfile(_info(MANIFEST_MEMBER, len(data)), _BytesIO(data))
            seen: set[str] = set()
            for _path, size, etag in entries:
                if etag in seen:
                    continue
                seen.add(etag)
                with store.blob_path(ref, etag).open("rb") as fh:
                    tar.addfile(_info(f"{folder}/{BLOBS}/{etag}", size), fh)
                rep.blobs += 1
                rep.bytes += size
            for path, _size, etag in entries:
                tar.addfile(_info(f"{folder}/{SNAPSHOTS}/{commit}/{path}", kind=tarfile.SYMTYPE,
                                  link=link_target(path, etag)))
            for name in refs:
                tar.addfile(_info(f"{folder}/{REFS}/{name}", len(commit)), _BytesIO(commit.encode()))
        os.replace(tmp, out)
    except OSError as exc:
        raise translate_os_error(exc, out, home=False) from exc
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError as exc:  # (a name too long to create is too long to remove: the error above says it)
            log.debug("%s not removed: %s", tmp, exc)
    rep.seconds = time.monotonic() - t0
    return rep


def _open_for_write(path: Path, compress: bool) -> tarfile.TarFile:
    if compress:  # level 1: weights barely compress; speed matters more
        tar = tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT, compresslevel=1)  # noqa: SIM115
    else:
        tar = tarfile.open(path, "w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
    setattr(tar, "copybufsize", BUF)  # noqa: B010 (not in typeshed); the default 16 KiB copies slowly
    return tar


class _BytesIO:
    """A minimal readable file over bytes (what ``addfile`` needs)."""

    def __init__(self, data: bytes) -> None:
        self._data, self._pos = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._data) if n < 0 else self._pos + n
        chunk, self._pos = self._data[self._pos:end], min(end, len(self._data))
        return chunk


# -- import ----------------------------------------------------------------------------------
def _unsafe(name: str, why: str) -> ProtocolError:
    return ProtocolError(f"archive member {name!r} refused: {why}", code="unsafe-path",
                         hint="the archive was not made by `qwenhome export` or was tampered with; nothing outside the store was written")


def _parse_manifest(raw: bytes) -> tuple[RepoRef, str, list[str], list[RepoFile]]:
    try:
        doc = json.loads(raw)
        if doc.get("format") != FORMAT:
            raise ProtocolError(f"unknown archive format {doc.get('format')!r}", code="bad-archive")
        ref = RepoRef.parse(str(doc["repo_id"]), str(doc.get("repo_type", "model")))
        commit = str(doc["commit"])
        if not is_commit(commit):
            raise ProtocolError(f"invalid commit {commit!r} in archive", code="bad-archive")
        refs = [validate_revision(str(r)) for r in doc.get("refs", [])]
        files = []
        for f in doc["files"]:
            etag = validate_etag(str(f["etag"]))
            size = int(f["size"])
            if size < 0:
                raise ValueError("negative size")
            kind = etag_kind(etag)
            files.append(RepoFile(validate_relpath(str(f["path"])), size,
                                  etag if kind == "git-sha1" else None, etag if kind == "sha256" else None))
        check_tree(files, code="bad-archive")  # the whole list, before anything is written
    except QwenhomeError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ProtocolError(f"invalid archive manifest: {exc}", code="bad-archive") from exc
    return ref, commit, refs, files


def _member_part(name: str, folder: str) -> tuple[str, str]:
    """(area, rest) of a member inside ``folder``: area is blobs, snapshots or refs."""
    if "\\" in name or "\x00" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise _unsafe(name, "absolute or non-portable path")
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise _unsafe(name, "'..', '.' or empty path segment")
    if parts[0] != folder or len(parts) < 3 or parts[1] not in (BLOBS, SNAPSHOTS, REFS):
        raise _unsafe(name, f"outside {folder}/{{blobs,snapshots,refs}}")
    return parts[1], "/".join(parts[2:])


def _receive_blob(store: Store, ref: RepoRef, f: RepoFile, src: IO[bytes]) -> int:
    """Stream one blob into the store: temp file, hash, size, rename."""
    blobs = store.blobs_dir(ref)
    blobs.mkdir(parents=True, exist_ok=True)
    tmp = blobs / f".import-{uuid.uuid4().hex[:12]}.incomplete"
    verifier = Verifier(f.size, f.sha256, f.blob_id)
    try:
        with tmp.open("wb") as out:
            while chunk := src.read(BUF):
                if verifier.hashed + len(chunk) > f.size:
                    raise IntegrityError(f"{f.etag[:12]}…: more bytes than the manifest says", code="size-mismatch")
                verifier.update(chunk)
                out.write(chunk)
        if not verifier.ok():
            raise IntegrityError(
                f"blob {f.etag[:12]}… ({f.path}) fails its {verifier.algorithm} check "
                f"(got {verifier.hexdigest()[:12]}…, {verifier.hashed} bytes)", path=f.path)
        os.replace(tmp, store.blob_path(ref, f.etag))
    except OSError as exc:
        raise translate_os_error(exc, tmp) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return f.size


def import_archive(store: Store, file: Path) -> ArchiveReport:
    """Verify and place the snapshot in ``file``; see the module docstring."""
    with writing(store.root):
        return _import_archive(store, file)


def _import_archive(store: Store, file: Path) -> ArchiveReport:
    t0 = time.monotonic()
    try:
        tar = tarfile.open(file, "r|*")  # noqa: SIM115 (closed below) streaming: one pass, also .tar.gz
    except (OSError, tarfile.TarError) as exc:
        raise UsageError(f"cannot read archive {file}: {exc}", code="bad-archive") from exc
    with tar:
        try:
            first = tar.next()
            if first is None or first.name != MANIFEST_MEMBER or not first.isreg() or first.size > MAX_MANIFEST:
                raise ProtocolError(f"{file} does not start with {MANIFEST_MEMBER}", code="bad-archive",
                                    hint="make archives with `qwenhome export`")
            fh = tar.extractfile(first)
            assert fh is not None
            ref, commit, refs, files = _parse_manifest(fh.read())
            rep = ArchiveReport(str(ref), commit, str(file), files=len(files))
            by_etag = {f.etag: f for f in files}
            folder = folder_name(ref)
            while (member := tar.next()) is not None:  # iterating would restart at the manifest
                area, rest = _member_part(member.name, folder)
                if area != BLOBS:
                    if not (member.isreg() or member.issym() or member.isdir()):
                        raise _unsafe(member.name, "not a file, folder or symlink")
                    continue  # links and refs are made from the manifest
                f = by_etag.get(rest)
                if f is None or not member.isreg():
                    raise _unsafe(member.name, "not a regular file of a listed blob")
                if member.size != f.size:
                    raise IntegrityError(f"blob {rest[:12]}… is {member.size} bytes, manifest says {f.size}",
                                         code="size-mismatch")
                if store.has_blob(ref, f.etag, f.size):
                    rep.blobs_present += 1
                    continue
                src = tar.extractfile(member)
                assert src is not None
                rep.bytes += _receive_blob(store, ref, f, src)
                rep.blobs += 1
        except (tarfile.TarError, EOFError) as exc:
            raise ProtocolError(f"damaged archive {file}: {exc}", code="bad-archive") from exc
    missing = sorted({f.path for f in files if not store.has_blob(ref, f.etag, f.size)})
    if missing:
        raise IntegrityError(f"archive lacks {len(missing)} blob(s), e.g. for {missing[0]}", code="archive-incomplete")
    store.save_manifest(Manifest(ref.repo_id, ref.repo_type, commit, files, f"import:{file.name}"))
    for f in files:
        store.link(ref, commit, f.path, f.etag)
    snap = store.snapshot_dir(ref, commit)
    snap.mkdir(parents=True, exist_ok=True)
    for name in refs:
        store.write_ref(ref, name, commit)
    rep.refs = refs
    rep.snapshot = str(snap)
    rep.seconds = time.monotonic() - t0
    return rep

