"""Chunking and hashing the mirror's blobs into Xet records, in one background thread.

Blobs are queued by :meth:`Builder.want`: all of them at start (oldest
revisions first, so that newer ones reuse their chunks), and again, ahead of
the rest, when a client asks for one that has no record yet (it is answered
over plain HTTP meanwhile). Building runs at about 100 MB per CPU second
(chunking, chunk hashes, the sha256 check), so a large home takes minutes;
the thread runs at a lower CPU priority than the threads serving clients,
and logs its progress.

A blob's new chunks go into xorbs of at most 16 MiB (uncompressed and made
from the blob when served; with a compression policy, compressed and stored);
chunks already in a
record of the same group (the same repository: another revision, another
file) are referred to where they are, as the Hub's deduplication does, so a
client holding an older revision can tell which chunks are new. A blob whose
bytes do not hash to its sha256 gets no record (it is logged, and served over
plain HTTP only).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, cast

from ...xet import FileRecipe, Policy, Xorb, XorbInfo, build_stream, xorb_folder_writer
from ...xet.builder import ChunkIndex
from .records import Body, Header, Records, Source, XorbLayout

log = logging.getLogger(__name__)

URGENT, NORMAL = 0, 1
_PROGRESS_EVERY = 10.0  # seconds between progress lines while one large blob is hashed
# Stock hf_xet fetches a file's xorb ranges a few at a time, one request each: with the Hub's 64 MiB
# a 200 MiB file was 4 requests, 15 MB/s for one client at 5 MB/s per connection; at 16 MiB, 13 and 22.
XORB_BYTES = 16 << 20


@dataclass(frozen=True)
class Job:
    sha256: str
    path: str  # the blob's real path
    size: int
    group: str


class _Stopped(Exception):
    pass


class _OtherHash(Exception):
    """A pulled recipe's chunk boundaries do not rebuild the file it names."""


class _Reader:
    """The blob's reads, counted for the progress log and cut short when the builder stops."""

    def __init__(self, fh: BinaryIO, stop: threading.Event, on_read: Callable[[int], None]) -> None:
        self.fh, self.stop, self.on_read = fh, stop, on_read

    def read(self, n: int = -1) -> bytes:
        if self.stop.is_set():
            raise _Stopped
        data = self.fh.read(n)
        self.on_read(len(data))
        return data


def blob_offsets(recipe: FileRecipe, owned: dict[str, XorbInfo]) -> dict[str, tuple[int, ...]]:
    """Where each chunk of the owned xorbs lies in the blob (its first place in the recipe)."""
    lengths = recipe.chunk_lengths
    assert lengths is not None
    found: dict[str, dict[int, int]] = {h: {} for h in owned}
    pos = k = 0
    for term in recipe.terms:
        spots = found.get(term.hash)
        for i in range(term.range.start, term.range.end):
            if spots is not None:
                spots.setdefault(i, pos)
            pos += lengths[k]
            k += 1
    out: dict[str, tuple[int, ...]] = {}
    for h, info in owned.items():
        spots = found[h]
        if len(spots) != info.num_chunks:
            raise ValueError(f"xorb {h[:16]} has chunks the recipe never uses")
        out[h] = tuple(spots[i] for i in range(info.num_chunks))
    return out


class Builder:
    """The queue of blobs to build and the thread that builds them."""

    def __init__(self, records: Records, *, policy: Policy = Policy.NONE, nice: int = 10,
                 recipes: Callable[[str], FileRecipe | None] | None = None) -> None:
        self.records = records
        self._recipes = recipes  # a blob's recipe as a pull kept it (by sha256), if any
        self.policy = policy  # NONE: xorbs made from the blob when served; else stored, compressed
        self._nice = nice
        self._cond = threading.Condition()
        self._heap: list[tuple[int, int, str]] = []
        self._jobs: dict[str, tuple[int, Job]] = {}  # queued: sha256 -> (priority, job)
        self._bad: dict[str, Source] = {}  # blobs whose bytes do not match their sha256
        self._seq = itertools.count()
        self._busy: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._group: tuple[str, ChunkIndex] | None = None  # the last group's chunk index, kept warm
        self.built = 0  # records built by this process
        self.from_recipes = 0  # of which cut on a pulled recipe's chunk boundaries (not chunked)
        self.bytes_built = 0
        self.failed = 0

    # -- the queue ---------------------------------------------------------------------
    def want(self, job: Job, urgent: bool = False) -> None:
        """Queue ``job`` unless it has a record; ``urgent`` moves it ahead of the rest."""
        prio = URGENT if urgent else NORMAL
        with self._cond:
            queued = self._jobs.get(job.sha256)
            if (queued is not None and queued[0] <= prio) or job.sha256 == self._busy:
                return
            bad = self._bad.get(job.sha256)
            if bad is not None and bad.path == job.path and bad.unchanged():
                return
            if self.records.usable(job.sha256) is not None:
                return
            self._jobs[job.sha256] = (prio, job)
            heapq.heappush(self._heap, (prio, next(self._seq), job.sha256))
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._jobs) + (self._busy is not None)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is queued or being built; False on time-out."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._jobs or self._busy is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def wait_for(self, sha256: str, timeout: float) -> bool:
        """Wait until ``sha256`` is neither queued nor being built; False on time-out."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while sha256 in self._jobs or self._busy == sha256:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def _next(self) -> Job | None:
        with self._cond:
            while not self._stop.is_set():
                while self._heap:
                    prio, _, sha = heapq.heappop(self._heap)
                    queued = self._jobs.get(sha)
                    if queued is not None and queued[0] == prio:
                        del self._jobs[sha]
                        self._busy = sha
                        return queued[1]
                self._cond.wait(0.5)
        return None

    # -- the thread ----------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            thread = threading.Thread(target=self._run, name="qwenhome-mirror-xet", daemon=True)
            thread.start()
            self._thread = thread

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        with contextlib.suppress(OSError, AttributeError):  # the serving threads come first
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self._nice)
        while (job := self._next()) is not None:
            try:
                self.build(job)
            except _Stopped:
                return
            except Exception:  # a bug or an unreadable blob: that blob is served over plain HTTP
                self.failed += 1
                self._group = None
                log.warning("xet: blob %s could not be chunked; it is served over plain HTTP",
                            job.sha256[:16], exc_info=log.isEnabledFor(logging.DEBUG))
            finally:
                with self._cond:
                    self._busy = None
                    self._cond.notify_all()

    def _known(self, group: str) -> ChunkIndex:
        if self._group is None or self._group[0] != group:
            self._group = (group, self.records.chunk_index(group))
        return self._group[1]

    def build(self, job: Job) -> Header | None:
        """Chunk and hash one blob now (in the calling thread) and record it; None if it cannot be.

        A blob whose pulled recipe knows every chunk's length (it came through
        Xet) is cut at those boundaries instead of chunked; the record is kept
        only if that gives the recipe's file hash, else the blob is chunked."""
        if self.records.usable(job.sha256) is not None:
            return self.records.usable(job.sha256)
        source = Source.of(job.path)
        if source.size != job.size:
            log.info("xet: blob %s is %d bytes, %d listed; not served through Xet",
                     job.sha256[:16], source.size, job.size)
            return None
        pulled = self._recipes(job.sha256) if self._recipes is not None else None
        if pulled is not None and pulled.chunk_lengths is not None and pulled.size == job.size:
            try:
                header = self._build(job, source, pulled)
            except _OtherHash as exc:
                log.info("xet: blob %s: %s; it is chunked instead", job.sha256[:16], exc)
            else:
                if header is not None:
                    self.from_recipes += 1
                return header
        return self._build(job, source, None)

    def _build(self, job: Job, source: Source, pulled: FileRecipe | None) -> Header | None:
        """Build ``job``'s record, on ``pulled``'s chunk boundaries if given (raises
        :class:`_OtherHash` when they do not give its file hash)."""
        known = self._known(job.group)
        owned: dict[str, XorbInfo] = {}
        started = last = time.monotonic()
        done = 0

        def progress(n: int) -> None:
            nonlocal done, last
            done += n
            now = time.monotonic()
            if now - last >= _PROGRESS_EVERY:
                last = now
                log.info("xet: hashing blob %s: %d%% of %.2f GB", job.sha256[:16], 100 * done // max(1, job.size),
                         job.size / 1e9)

        stored: dict[str, Source] = {}
        store = xorb_folder_writer(self.records.xorbs_folder) if self.policy is not Policy.NONE else None

        def keep(xorb: Xorb) -> None:
            owned[xorb.info.hex] = xorb.info
            if store is not None:
                store(xorb)
                stored[xorb.info.hex] = Source.of(str(self.records.xorbs_folder / f"{xorb.info.hex}.xorb"))

        def forget() -> None:
            self._group = None  # its chunks went into the index: start it again from the records
            for h in stored:
                (self.records.xorbs_folder / f"{h}.xorb").unlink(missing_ok=True)

        with open(job.path, "rb") as fh:
            try:
                built = build_stream(cast(BinaryIO, _Reader(fh, self._stop, progress)), keep, known=known,
                                     policy=self.policy, keep_xorb_data=store is not None,
                                     max_xorb_bytes=XORB_BYTES,
                                     chunk_lengths=pulled.chunk_lengths if pulled is not None else None)
            except ValueError as exc:  # (the blob is not the size the lengths add up to)
                forget()
                raise _OtherHash(str(exc)) from None
        if built.sha256 != job.sha256 or not source.unchanged():
            forget()
            if built.sha256 != job.sha256:
                log.warning("xet: blob %s does not hash to its name (sha256 %s); served over plain HTTP only",
                            job.sha256[:16], built.sha256[:16])
                with self._cond:
                    self._bad[job.sha256] = source
            return None
        if pulled is not None and built.file_hash != pulled.file_hash:
            forget()
            raise _OtherHash(f"its pulled recipe's chunk lengths give Xet hash {built.file_hash[:16]}, "
                             f"not the recipe's {pulled.file_hash[:16]}")
        if stored:
            body = Body(built.recipe, {h: XorbLayout(info, (), stored[h]) for h, info in owned.items()})
        else:
            offsets = blob_offsets(built.recipe, owned)
            body = Body(built.recipe, {h: XorbLayout(info, offsets[h], source) for h, info in owned.items()})
        header = Header(job.sha256, job.size, built.file_hash, source, job.group, tuple(owned),
                        tuple(dict.fromkeys(t.hash for t in built.recipe.terms)))
        self.records.add(header, body)
        self.built += 1
        self.bytes_built += job.size
        took = time.monotonic() - started
        log.info("xet: blob %s hashed (%.2f GB in %.1f s, %d%% of its chunks reused%s); %d queued",
                 job.sha256[:16], job.size / 1e9, took,
                 100 * built.reused_chunks // max(1, built.reused_chunks + built.new_chunks),
                 ", cut where its pulled recipe says" if pulled is not None else "", self.pending() - 1)
        return header
