"""The Hugging Face Hub protocol: revision metadata and file URLs.

One revision request (``/api/{type}s/{repo}/revision/{rev}?blobs=true``)
gives the commit and every file's size, blob id and LFS sha256; when a server
omits sizes or hashes, the recursive tree listing (paginated by ``Link``) fills
them in; a server without a tree listing is asked per file with HEAD, as
``huggingface_hub`` asks each file it downloads (``X-Linked-Etag`` and
``X-Linked-Size`` for LFS files, else ``ETag`` and ``Content-Length``).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, urljoin

from ..config import Source
from ..errors import ProtocolError, QwenhomeError, RepoNotFoundError
from ..net import HttpClient, raise_for_status, token_for
from ..repo.manifest import Manifest, RepoFile, listed_size
from ..repo.ref import RepoRef, is_commit, validate_etag, validate_relpath
from .jsonapi import get_json

# Protocol header names, as the Hub sends them.
HEADER_REPO_COMMIT = "X-Repo-Commit"
HEADER_LINKED_ETAG = "X-Linked-Etag"
HEADER_LINKED_SIZE = "X-Linked-Size"
HEADER_ERROR_CODE = "X-Error-Code"
HEADER_ERROR_MESSAGE = "X-Error-Message"

_LINK_NEXT = re.compile(r'<([^>]+)>;\s*rel="next"')
_HEAD_THREADS = 8  # as huggingface_hub's snapshot_download runs its per-file requests


class HubClient:
    """Talks to one Hub-protocol source (huggingface.co, a mirror, qwenhome mirror)."""

    kind = "hf"

    def __init__(self, source: Source, http: HttpClient) -> None:
        self.source = source
        self.http = http
        self.base = source.url.rstrip("/")

    def _get_json(self, url: str, ref: RepoRef) -> tuple[Any, str | None]:
        data, resp = get_json(self.http, self.source, url, ref, expected="a Hub-compatible endpoint",
                              html_hint="a captive portal or proxy answered instead of the Hub")
        return data, resp.header("Link")

    def revision_url(self, ref: RepoRef) -> str:
        rev = quote(ref.rev, safe="")
        return f"{self.base}/api/{ref.api_prefix}/{ref.repo_id}/revision/{rev}?blobs=true"

    def manifest(self, ref: RepoRef) -> Manifest:
        """Commit and per-file metadata for ``ref`` in one request (two at most)."""
        data, _ = self._get_json(self.revision_url(ref), ref)
        if not isinstance(data, dict):
            raise ProtocolError(f"unexpected revision metadata for {ref}", code="bad-metadata")
        commit = str(data.get("sha") or "")
        if not is_commit(commit):
            raise ProtocolError(f"source sent no valid commit for {ref}", code="bad-metadata", commit=commit)
        siblings = data.get("siblings")
        files: list[RepoFile] = []
        complete = isinstance(siblings, list)
        for s in siblings if isinstance(siblings, list) else []:
            if not isinstance(s, dict) or "rfilename" not in s:
                raise ProtocolError(f"malformed file entry for {ref}", code="bad-metadata")
            path = validate_relpath(str(s["rfilename"]))
            lfs = s.get("lfs") if isinstance(s.get("lfs"), dict) else None
            size = s.get("size")
            blob_id = s.get("blobId")
            sha = lfs.get("sha256") if lfs else None
            if lfs and size is None:
                size = lfs.get("size")
            if size is None or (blob_id is None and sha is None):
                complete = False
                break
            files.append(_file(path, size, blob_id, sha))
        if not complete:
            try:
                files = self.tree(ref.at(commit))
            except RepoNotFoundError:
                if not isinstance(siblings, list) or not siblings:
                    raise
                names = [validate_relpath(str(s["rfilename"])) for s in siblings
                         if isinstance(s, dict) and "rfilename" in s]
                files = self.head_files(ref, commit, names)
        return Manifest(ref.repo_id, ref.repo_type, commit, files, source=self.source.name)

    def tree(self, ref: RepoRef) -> list[RepoFile]:
        url: str | None = f"{self.base}/api/{ref.api_prefix}/{ref.repo_id}/tree/{quote(ref.rev, safe='')}?recursive=true&expand=false"
        files: list[RepoFile] = []
        pages = 0
        while url and pages < 10_000:
            pages += 1
            data, link = self._get_json(url, ref)
            if not isinstance(data, list):
                raise ProtocolError(f"unexpected tree listing for {ref}", code="bad-metadata")
            for e in data:
                if not isinstance(e, dict) or e.get("type") != "file":
                    continue
                lfs = e.get("lfs") if isinstance(e.get("lfs"), dict) else None
                files.append(
                    _file(validate_relpath(str(e.get("path"))), e.get("size"), e.get("oid"), lfs.get("oid") if lfs else None)
                )
            m = _LINK_NEXT.search(link or "")
            url = urljoin(url, m.group(1)) if m else None
        return files

    def head_files(self, ref: RepoRef, commit: str, paths: list[str]) -> list[RepoFile]:
        """Each file's size and hash from a HEAD of its URL at ``commit`` (not
        following the CDN redirect: the Hub's answer carries the metadata)."""
        def head(path: str) -> RepoFile:
            url = self.file_url(ref, commit, path)
            resp = self.http.open("HEAD", url, token=token_for(self.source.token, self.source.url, url),
                                  follow_redirects=False)
            resp.release()
            if resp.status >= 400:
                raise_for_status(resp.status, resp.headers, url, str(ref))
            linked = resp.header(HEADER_LINKED_ETAG)
            etag = (linked or resp.header("ETag") or "").removeprefix("W/").strip('"')
            size = resp.header(HEADER_LINKED_SIZE) if linked else resp.header("Content-Length")
            sha = etag if len(etag) == 64 else None
            return _file(path, size, etag if len(etag) == 40 else None, sha)

        # (Imported only for such servers: it brings in logging.)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(_HEAD_THREADS, len(paths))) as pool:
            return list(pool.map(head, paths))

    def file_url(self, ref: RepoRef, commit: str, path: str) -> str:
        return f"{self.base}/{ref.url_prefix}{ref.repo_id}/resolve/{commit}/{quote(path)}"

    def xet_token_url(self, ref: RepoRef, commit: str) -> str:
        """Where the Hub hands Xet read tokens for a revision (the ``xet-auth``
        link its resolve answers give, and the reference client's fallback)."""
        return f"{self.base}/api/{ref.api_prefix}/{ref.repo_id}/xet-read-token/{commit}"


def _file(path: str, size: Any, blob_id: Any, sha256: Any) -> RepoFile:
    n = listed_size(size)
    if n is None:
        raise ProtocolError(f"invalid size {str(size)[:40]!r} for {path!r}", code="bad-metadata")
    try:
        bid = validate_etag(str(blob_id).lower()) if blob_id else None
        sha = validate_etag(str(sha256).lower()) if sha256 else None
    except QwenhomeError as exc:
        raise ProtocolError(f"invalid hash for {path!r}", code="bad-metadata") from exc
    if sha is not None and len(sha) != 64:
        raise ProtocolError(f"invalid sha256 for {path!r}", code="bad-metadata")
    if bid is not None and len(bid) != 40:
        raise ProtocolError(f"invalid blob id for {path!r}", code="bad-metadata")
    if bid is None and sha is None:
        raise ProtocolError(f"no hash for {path!r}", code="bad-metadata")
    return RepoFile(path, n, bid, sha)
