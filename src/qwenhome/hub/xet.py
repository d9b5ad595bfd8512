"""The Hub's Xet protocol, client side (docs/xet.md, "How a client downloads
a Xet file"): which files are Xet-backed, the access token, reconstructions.

- A file is Xet-backed when its ``resolve`` answer (HEAD, not following the
  redirect) carries ``X-Xet-Hash`` and a ``Link`` with ``rel="xet-auth"``:
  :meth:`XetSession.head`.
- The token comes from that link with the Hub token (sent only if the link is
  the source's own origin), as JSON or ``X-Xet-*`` headers; it is a bearer
  token for the CAS named in it, kept per link and asked again some seconds
  before it expires, or when the CAS answers 401.
- A reconstruction is ``GET {casUrl}/v2/reconstructions/{file hash}``, with
  ``Range`` for part of the file; a CAS answering 404 or 501 to v2 is asked
  ``/v1/`` from then on. The Xet token goes to the CAS's origin only; the
  signed xorb URLs in the answer carry no token at all.

The bytes themselves are fetched by the transfer engine (transfer/xorbs.py).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from ..config import Source
from ..errors import QwenhomeError
from ..net import HttpClient, raise_for_status, token_for
from ..repo.ref import RepoRef
from ..xet.errors import XetAnswerError
from ..xet.hashes import is_hash_hex
from ..xet.token import HEADER_XET_HASH, LINK_REL_AUTH, XetToken
from .hf import HEADER_LINKED_ETAG, HEADER_LINKED_SIZE, HubClient

if TYPE_CHECKING:  # (the parser loads numpy: imported when a source speaks Xet)
    from ..xet.reconstruction import ReconstructionV2

log = logging.getLogger(__name__)

_LINK = re.compile(r'<([^>]*)>\s*;\s*rel="?([^",;]+)"?')
MAX_ANSWER = 64 << 20  # a reconstruction of a large file lists thousands of terms, never this much
_TOKEN_MARGIN = 30.0  # seconds before its expiry a token is asked again (the reference client's)


@dataclass(frozen=True)
class XetFileInfo:
    """What a file's resolve answer says of its Xet side."""

    path: str
    file_hash: str  # the Xet file id (64 hex)
    token_url: str  # the xet-auth link
    linked_etag: str | None  # X-Linked-Etag: the sha256 the file must have
    size: int | None

    def names(self, sha256: str | None, size: int) -> bool:
        """Whether the answer names the file a listing gives (its sha256 and size)."""
        return self.linked_etag in (None, sha256) and self.size in (None, size)


def links(header: str | None) -> dict[str, str]:
    """A ``Link`` header's targets by ``rel``."""
    return {rel.strip(): url.strip() for url, rel in _LINK.findall(header or "")}


class XetSession:
    """Xet access through one Hub source: file probes, tokens, reconstructions.
    Thread-safe: the engine's planner threads share one."""

    def __init__(self, source: Source, http: HttpClient, clock: Callable[[], float] = time.time) -> None:
        self.source = source
        self.http = http
        self.clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[XetToken, float]] = {}  # token URL -> (token, when it came)
        self._v1: set[str] = set()  # CAS URLs that answer v1 only

    # -- which files -------------------------------------------------------------------------
    def head(self, ref: RepoRef, commit: str, path: str) -> XetFileInfo | None:
        """What the file's resolve answer (HEAD) says of its Xet side; None when
        it is not Xet-backed, or the HEAD fails (the file is fetched plainly)."""
        url = HubClient(self.source, self.http).file_url(ref, commit, path)
        try:
            resp = self.http.open("HEAD", url, token=token_for(self.source.token, self.source.url, url),
                                  follow_redirects=False)
            resp.release()
        except QwenhomeError as exc:
            log.debug("Xet probe of %s failed (%s): fetched over plain HTTP", path, exc)
            return None
        return file_info(path, url, resp.status, resp.header)

    # -- the token -----------------------------------------------------------------------------
    def guess_token(self, ref: RepoRef, commit: str) -> None:
        """Ask the token where the Hub hands it while the first HEAD is out:
        when that HEAD's ``xet-auth`` link names the same URL (as the Hub's
        do), the reconstructions follow it one round trip sooner. A source
        that does not speak Xet only answers one request in vain."""
        self.prefetch_token(HubClient(self.source, self.http).xet_token_url(ref, commit))

    def prefetch_token(self, token_url: str) -> None:
        """Ask ``token_url``'s token ahead of the reconstructions; a failure
        only means they ask it again (and say why)."""
        try:
            self.token(token_url)
        except QwenhomeError as exc:
            log.debug("Xet token not had ahead from %s: %s", _where(token_url), exc)

    def token(self, token_url: str, *, refresh: bool = False) -> XetToken:
        """The access token of ``token_url``, asked again shortly before it expires."""
        with self._lock:
            held = self._tokens.get(token_url)
            now = self.clock()
            if held is not None and not refresh:
                tok, got = held
                # A short-lived token is asked again a quarter of its life before its end.
                margin = min(_TOKEN_MARGIN, max(0.0, (tok.exp - got) / 4))
                if not tok.expires_within(now, margin):
                    return tok
            tok = self._ask_token(token_url)
            self._tokens[token_url] = (tok, now)
            return tok

    def _ask_token(self, token_url: str) -> XetToken:
        resp = self.http.open("GET", token_url, token=token_for(self.source.token, self.source.url, token_url),
                              headers={"Accept": "application/json"})
        if resp.status >= 400:
            raise_for_status(resp.status, resp.headers, token_url, "the Xet token", _body(resp))
        body = resp.read(1 << 20)
        try:
            return XetToken.from_json(body)
        except XetAnswerError:
            tok = XetToken.from_headers(dict(resp.headers.items()))
            if tok is None:
                raise
            return tok

    # -- reconstructions -----------------------------------------------------------------------
    def reconstruction(self, info: XetFileInfo, byte_range: tuple[int, int] | None = None) -> ReconstructionV2:
        """The reconstruction of the file, or of its bytes ``[start, end)``, with fresh URLs."""
        from ..xet.reconstruction import parse_reconstruction

        headers = {"Range": f"bytes={byte_range[0]}-{byte_range[1] - 1}"} if byte_range else {}
        refresh = False
        for _ in range(3):
            tok = self.token(info.token_url, refresh=refresh)
            cas = tok.cas_url.rstrip("/")
            version = 1 if cas in self._v1 else 2
            url = f"{cas}/v{version}/reconstructions/{info.file_hash}"
            resp = self.http.open("GET", url, headers=headers, token=token_for(tok.access_token, tok.cas_url, url))
            if resp.status in (404, 501) and version == 2:
                _body(resp)
                with self._lock:
                    self._v1.add(cas)  # (a CAS before v2: asked v1 from now on)
                continue
            if resp.status == 401:
                _body(resp)
                if refresh:  # (a fresh token refused too: no use asking a third)
                    break
                refresh = True  # the token expired or was revoked: a new one, once
                continue
            if resp.status >= 400:
                raise_for_status(resp.status, resp.headers, _where(url), f"the Xet reconstruction of {info.path}",
                                 _body(resp))
            return parse_reconstruction(resp.read(MAX_ANSWER))
        raise XetAnswerError(f"the Xet server refused the reconstruction of {info.path}, with a fresh token too",
                             code="xet-refused", hint="the file comes from its other sources (the resolve bridge, "
                             "mirrors); `qwenhome doctor` checks the Xet hosts")

    def hosts(self) -> dict[str, str]:
        """The Xet hosts this session has talked to: the token endpoints and the CAS."""
        with self._lock:
            out = {f"token {urlsplit(u).netloc}": u for u in self._tokens}
            out.update({f"cas {urlsplit(t.cas_url).netloc}": t.cas_url for t, _ in self._tokens.values()})
            return out


def file_info(path: str, url: str, status: int, header: Callable[[str], str | None]) -> XetFileInfo | None:
    """What the resolve answer (``status``, ``header``) of ``path`` at ``url``
    says of its Xet side; None when it does not name one. The doctor reads its
    own HEAD with it."""
    if status >= 400:
        return None
    file_hash = (header(HEADER_XET_HASH) or "").strip().lower()
    auth = links(header("Link")).get(LINK_REL_AUTH)
    if not is_hash_hex(file_hash) or not auth:
        return None
    linked = (header(HEADER_LINKED_ETAG) or "").removeprefix("W/").strip('"').lower() or None
    size_text = header(HEADER_LINKED_SIZE) or ""
    return XetFileInfo(path, file_hash, urljoin(url, auth), linked, int(size_text) if size_text.isdigit() else None)


def _body(resp: object) -> bytes:
    """The start of an error answer, for the server's message (never fatal)."""
    try:
        return resp.read(1 << 16)  # type: ignore[attr-defined, no-any-return]
    except QwenhomeError as exc:
        log.debug("error body not read: %s", exc)
        return b""


def _where(url: str) -> str:
    """A URL as messages show it: no query (a signed URL's is a secret for a while)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
