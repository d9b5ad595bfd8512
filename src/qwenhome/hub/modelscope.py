"""The ModelScope protocol: file listing and single-file download URLs.

Listing: ``GET /api/v1/models/{owner}/{name}/repo/files?Revision={rev}&Recursive=True``
answers ``{"Code": 200, "Data": {"Files": [{Name, Path, Type, Size, Sha256,
Revision, IsLFS}]}}``. The server silently cuts a listing off at 3000 entries,
so a listing of that length is walked again folder by folder (``Root=dir``).
Download: ``GET /api/v1/models/{owner}/{name}/repo?Revision={rev}&FilePath={path}``
(ranges work). The default revision is ``master``.

ModelScope has no git blob ids and its commits are not Hub commits, so a
manifest built here names every blob by its sha256 and carries a
deterministic commit id derived from the listed content
(:func:`qwenhome.repo.manifest.listing_commit`):
the same files give the same id, any change gives a new one.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from ..config import Source
from ..errors import ProtocolError, RepoNotFoundError, RevisionNotFoundError
from ..net import HttpClient
from ..repo.manifest import Manifest, RepoFile, listing_commit
from ..repo.ref import DEFAULT_REVISION, RepoRef, validate_relpath
from .hf import _file
from .jsonapi import get_json

MS_DEFAULT_REVISION = "master"
# The server's silent cut-off; a listing this long may be incomplete.
LISTING_LIMIT = 3000
# Folders walked one by one at most (a guard against a lying server).
MAX_FOLDERS = 10_000


def ms_revision(ref: RepoRef) -> str:
    """The ModelScope revision for ``ref``: no revision (or the Hub's ``main``) is ``master``."""
    if ref.revision is None or ref.revision == DEFAULT_REVISION:
        return MS_DEFAULT_REVISION
    return ref.revision


class ModelScopeClient:
    """Talks to one ModelScope-protocol source."""

    kind = "modelscope"

    def __init__(self, source: Source, http: HttpClient, *, listing_limit: int = LISTING_LIMIT) -> None:
        self.source = source
        self.http = http
        self.base = source.url.rstrip("/")
        self.listing_limit = listing_limit

    # -- URLs --------------------------------------------------------------
    def _repo_path(self, ref: RepoRef) -> str:
        if ref.repo_type != "model":
            raise ProtocolError(f"{ref}: only model repositories are fetched from ModelScope",
                                code="unsupported-repo-type",
                                hint="use a Hub source for datasets")
        return "/".join(quote(p, safe="") for p in ref.repo_id.split("/"))

    def listing_url(self, ref: RepoRef, revision: str, root: str | None = None, recursive: bool = True) -> str:
        query: dict[str, str] = {"Revision": revision, "Recursive": "True" if recursive else "False"}
        if root:
            query["Root"] = root
        return f"{self.base}/api/v1/models/{self._repo_path(ref)}/repo/files?{urlencode(query)}"

    def file_url(self, ref: RepoRef, revision: str, path: str) -> str:
        query = urlencode({"Revision": revision, "FilePath": path})
        return f"{self.base}/api/v1/models/{self._repo_path(ref)}/repo?{query}"

    # -- listing -------------------------------------------------------------
    def _get_files(self, url: str, ref: RepoRef) -> list[dict[str, Any]]:
        data, _ = get_json(self.http, self.source, url, ref, expected="a ModelScope endpoint")
        if not isinstance(data, dict):
            raise ProtocolError(f"unexpected ModelScope listing for {ref}", code="bad-metadata", url=url)
        code = data.get("Code", 200)
        if code != 200 or data.get("Success") is False:
            message = str(data.get("Message") or data.get("message") or code)[:200]
            if "revision" in message.lower():
                raise RevisionNotFoundError(f"revision of {ref} not found on {self.source.label}: {message}", url=url)
            raise RepoNotFoundError(f"{ref} not found on {self.source.label}: {message}", url=url)
        files = (data.get("Data") or {}).get("Files") if isinstance(data.get("Data"), dict) else None
        if not isinstance(files, list):
            raise ProtocolError(f"ModelScope listing for {ref} has no Data.Files", code="bad-metadata", url=url)
        return [e for e in files if isinstance(e, dict)]

    def list_files(self, ref: RepoRef, revision: str | None = None) -> list[RepoFile]:
        """Every file of the repository at ``revision`` with its size and sha256."""
        rev = revision or ms_revision(ref)
        entries = self._get_files(self.listing_url(ref, rev), ref)
        if len(entries) >= self.listing_limit:
            entries = self._walk(ref, rev)
        out: dict[str, RepoFile] = {}
        for e in entries:
            if e.get("Type", "blob") != "blob":
                continue
            path = validate_relpath(str(e.get("Path") or e.get("Name") or ""))
            sha = e.get("Sha256")
            if not sha:
                raise ProtocolError(f"ModelScope lists no sha256 for {path!r}", code="bad-metadata")
            out[path] = _file(path, e.get("Size"), None, sha)
        return [out[p] for p in sorted(out)]

    def _walk(self, ref: RepoRef, rev: str) -> list[dict[str, Any]]:
        """List folder by folder, because the recursive listing was cut off."""
        pending: list[str | None] = [None]
        seen: set[str] = set()
        entries: list[dict[str, Any]] = []
        while pending:
            if len(seen) > MAX_FOLDERS:
                raise ProtocolError(f"ModelScope listing of {ref} has too many folders", code="bad-metadata")
            root = pending.pop()
            level = self._get_files(self.listing_url(ref, rev, root, recursive=False), ref)
            if len(level) >= self.listing_limit:
                raise ProtocolError(
                    f"ModelScope cut off the listing of {ref}/{root or ''} at {len(level)} entries",
                    code="listing-truncated",
                    hint="the folder holds too many files for ModelScope's listing; use a Hub source",
                )
            for e in level:
                path = str(e.get("Path") or "")
                if e.get("Type") == "tree":
                    validate_relpath(path)
                    if path not in seen and path != (root or ""):
                        seen.add(path)
                        pending.append(path)
                else:
                    entries.append(e)
        return entries

    def manifest(self, ref: RepoRef) -> Manifest:
        """A manifest whose blobs are named by sha256 and whose commit is
        :func:`listing_commit` of the listed files."""
        rev = ms_revision(ref)
        files = self.list_files(ref, rev)
        return Manifest(ref.repo_id, ref.repo_type, listing_commit(ref.repo_id, rev, files), files,
                        source=self.source.name)
