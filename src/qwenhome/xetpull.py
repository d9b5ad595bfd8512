"""The Xet side of a pull: which files may come through Xet, their recipes,
the local chunks they can reuse, and the recipe kept once a file is in.

For the LFS files of a pull from a Hub-protocol source, the resolve answers
say which are Xet-backed (:meth:`qwenhome.hub.xet.XetSession.probe`); each
gets its whole reconstruction (its terms: the recipe) and, from the recipes
of the home's blobs, the ranges some blob holds already. The engine then
copies those, fetches the rest through xorb ranges, and falls back to the
file's other candidates (the resolve bridge, mirrors, ModelScope) when Xet
fails. Anything going wrong here only means the file comes plainly.

The Xet format (numpy, lz4) and the engine's Xet side are imported only once
the source has answered as a Xet server: a plain pull starts as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from .config import Settings, Source
from .errors import ConnectError, QwenhomeError
from .hub.xet import XetFileInfo, XetSession
from .net import HttpClient
from .progress import RETRY, SOURCE, EventSink, ProgressEvent
from .repo.manifest import RepoFile
from .repo.ref import RepoRef
from .store.cache import Store
from .transfer.retry import Backoff

if TYPE_CHECKING:
    from .store.recipes import Recipes
    from .transfer.xetjob import Ask, XetJob
    from .xet.recipe import FileRecipe
    from .xet.reconstruction import ReconstructionV2
    from .xet.slicing import Slicer

log = logging.getLogger(__name__)

_RECONSTRUCTIONS = 8  # whole-file reconstructions asked at once
_EARLY_HEADS = 4  # HEADs asked at once, before the first (the largest file's) says whether the source speaks Xet
_ATTEMPTS = 4  # tries of a whole-file reconstruction (a server error), as of a listing


class XetPull:
    def __init__(self, settings: Settings, store: Store, http: HttpClient, emit: EventSink,
                 backoff: Backoff = Backoff()) -> None:
        self.settings = settings
        self.backoff = backoff
        self.http = http
        self.emit = emit
        self.store = store
        self._recipes: Recipes | None = None
        self.local_bytes = 0  # bytes planned to come from local blobs

    @property
    def recipes(self) -> Recipes:
        if self._recipes is None:
            from .store.recipes import Recipes

            self._recipes = Recipes(self.store)
        return self._recipes

    def jobs(self, ref: RepoRef, commit: str, files: Sequence[RepoFile], source: Source) -> dict[str, XetJob]:
        """The Xet jobs of ``files`` (by blob name) that a Hub source serves through Xet."""
        lfs = [f for f in files if f.sha256 and f.size > 0]
        if not lfs or source.kind != "hf" or not self.settings.xet:
            return {}
        session = XetSession(source, self.http)
        # The largest files first, their HEADs at once (the first says whether
        # the source speaks Xet: one that does not costs the plain path a few
        # HEADs, not one per file); the token is asked where the Hub hands it
        # meanwhile. So every file's reconstruction is asked one round trip
        # after the listing, not one more per file beyond the first.
        lfs.sort(key=lambda f: f.size, reverse=True)
        guess = threading.Thread(target=session.guess_token, args=(ref, commit), daemon=True, name="qh-xet-token")
        guess.start()
        pool = ThreadPoolExecutor(_RECONSTRUCTIONS)
        try:
            heads = {f.path: pool.submit(session.head, ref, commit, f.path) for f in lfs[:_EARLY_HEADS]}
            first = heads[lfs[0].path].result()
            if first is None:
                return {}
            from .transfer.xetjob import Copy, XetJob

            def recipe_of(f: RepoFile) -> tuple[RepoFile, XetFileInfo, FileRecipe, Slicer] | None:
                early = heads.get(f.path)
                info = early.result() if early is not None else session.head(ref, commit, f.path)
                got = self._recipe(session, f, info) if info is not None and _agrees(f, info) else None
                return None if info is None or got is None else (f, info, *got)

            pool.submit(session.prefetch_token, first.token_url)
            found = [r for r in pool.map(recipe_of, lfs) if r is not None]
        finally:
            pool.shutdown(wait=False, cancel_futures=True)  # (a plain source's other HEADs end on their own)
        if not found:
            return {}
        local = self.recipes.local_chunks({t.hash for _, _, r, _ in found for t in r.terms},
                                          exclude={f.etag for f, _, _, _ in found})
        xet = Source("xet", "xet", "", named=True)
        jobs: dict[str, XetJob] = {}
        for f, info, recipe, whole in found:
            copies = [Copy(Path(r.key), r.src_offset, r.offset, r.length) for r in local.find(recipe)]
            self.local_bytes += sum(c.length for c in copies)
            learned = {(t.hash, i): n for t in recipe.terms for i in range(t.range.start, t.range.end)
                       if (n := local.length(t.hash, i))}
            jobs[f.etag] = XetJob(replace(xet, url=_cas(session, info)), _asker(session, info), recipe, copies,
                                  learned, whole=whole)
        return jobs

    def _recipe(self, session: XetSession, f: RepoFile, info: XetFileInfo) -> tuple[FileRecipe, Slicer] | None:
        """The file's recipe, and its whole reconstruction (whose fresh URLs
        serve the first parts the engine fetches)."""
        from .xet.recipe import FileRecipe
        from .xet.slicing import Slicer

        try:
            answer = self._whole(session, f, info)
            recipe = FileRecipe.from_reconstruction(info.file_hash, answer)
            whole = Slicer(answer)
        except (QwenhomeError, ValueError) as exc:  # (ValueError: not a whole-file answer)
            msg = exc.one_line() if isinstance(exc, QwenhomeError) else str(exc)
            self.emit(ProgressEvent(SOURCE, "", f.path, message=f"xet: {msg}; fetched over plain HTTP"))
            log.debug("no Xet reconstruction of %s: %s", f.path, msg)
            return None
        if recipe.size != f.size:
            log.debug("Xet reconstruction of %s is %d bytes, the listing says %d", f.path, recipe.size, f.size)
            return None
        return recipe, whole

    def _whole(self, session: XetSession, f: RepoFile, info: XetFileInfo) -> ReconstructionV2:
        """The whole file's reconstruction: a server error is asked again a
        few times, a host that does not connect is not (the file comes
        plainly at once)."""
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                return session.reconstruction(info)
            except QwenhomeError as exc:
                if not exc.transient or isinstance(exc, ConnectError) or attempt == _ATTEMPTS:
                    raise
                ra = exc.context.get("retry_after")
                delay = self.backoff.delay(attempt, ra if isinstance(ra, float | int) else None)
                self.emit(ProgressEvent(RETRY, "", f.path, message=f"xet: {exc.code}; retry in {delay:.1f}s"))
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def keep(self, sha256: str, job: XetJob) -> None:
        """The file is in the home: keep its recipe (with every chunk's length
        when this pull learnt them) for later pulls to reuse its chunks."""
        from .xet.recipe import FileRecipe

        recipe = job.recipe
        lengths = job.chunk_lengths()
        try:
            some = job.term_lengths() if lengths is None else ()
            if lengths is not None:
                recipe = FileRecipe(recipe.file_hash, recipe.size, recipe.terms, lengths)
            elif any(any(ls) for ls in some):  # (partly through xorbs, partly plain)
                recipe = FileRecipe(recipe.file_hash, recipe.size, recipe.terms, some_lengths=some)
            self.recipes.save(sha256, recipe)
        except (QwenhomeError, ValueError) as exc:  # only reuse is lost
            log.debug("recipe of %s not kept: %s", sha256, exc)


def _agrees(f: RepoFile, info: XetFileInfo) -> bool:
    """The resolve answer names the file the listing does (its sha256 and size)."""
    return (info.linked_etag is None or info.linked_etag == f.sha256) and info.size in (None, f.size)


def _asker(session: XetSession, info: XetFileInfo) -> Ask:
    return lambda byte_range: session.reconstruction(info, byte_range)


def _cas(session: XetSession, info: XetFileInfo) -> str:
    try:
        return session.token(info.token_url).cas_url
    except QwenhomeError:
        return info.token_url
