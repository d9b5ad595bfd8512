"""The transfer engine: ranged, parallel, resumable, verified.

The engine holds the state of one pull (files, ranges in flight, part maps)
and decides what moves next; two paths move the bytes. Sources reached
without a proxy go through ``loop_threads`` event loops (:mod:`.evloop`) that
splice each plain-HTTP body socket → file in the kernel and decrypt HTTPS
bodies outside the GIL; proxies, failed handshakes and odd answers go through
worker threads (:mod:`.workers`), one blocking connection each.

Scheduling: largest files first, every other range to the smallest file
waiting; a file is carved into ranges on demand, lowest offset first, written
in place into a pre-sized partial file; the first wave grows from small to
full so the written prefix moves at once; when nothing is left to hand out the
remaining range of a slow connection is split (end-game), and so is a range
that holds a file's prefix far behind the bytes received. The thread that
grows a file's written prefix hashes it up to there, so verification is
almost finished when the last byte lands. The run() thread persists part
maps, emits progress and tunes the connection count from the throughput:
widening while it pays, holding when this machine is the limit, and when a
wider step cost throughput (a server that pays per connection) halving while
the rate holds, with longer ranges (see ``_tune``, ``_size_ranges``).
Ranges are otherwise sized to keep little in flight, since the hash can only
follow the written prefix, yet to last many request round trips, as the
loops measure them.

Failures: transient errors (connect/read, 408/429/5xx, a dropped or stalled
body) back off with jitter (``Retry-After`` wins) and the file's ranges are
handed out again; permanent ones (404, 401/403, wrong size), and transient
ones in ``max_retries`` rounds with no range completed (a blip that cuts every
connection at once is one round), move the file to its next candidate source;
bytes that fail verification are discarded and the file refetched, from
another source when there is one. A full disk stops the whole run; part maps stay for resume.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from ..errors import (
    EXIT_INTERRUPTED,
    DiskFullError,
    IntegrityError,
    QwenhomeError,
    StoreError,
)
from ..hub.http import HttpClient
from ..progress import (
    FILE_DONE,
    FILE_ERROR,
    FILE_START,
    PROGRESS,
    RETRY,
    SOURCE,
    EventSink,
    ProgressEvent,
)
from ..store.cache import translate_os_error
from . import partmap
from .controller import Controller, Steps, initial_connections
from .evloop import IoLoop
from .hashing import Verifier
from .partmap import Intervals
from .retry import Backoff
from .scheduler import Scheduler, Splits
from .sizing import RangeSizer, Sizes
from .work import Candidate, Destination, Item, Span, Status
from .workers import Workers

__all__ = ["Cancelled", "Candidate", "EngineConfig", "FileJob", "TransferEngine"]

KiB = 1 << 10
MiB = 1 << 20
# Fault the mapped pages in one go (they are in the page cache: just written).
_MAP_POPULATE = getattr(mmap, "MAP_POPULATE", 0)


class Cancelled(QwenhomeError):
    code = "cancelled"
    exit_code = EXIT_INTERRUPTED


@dataclass
class FileJob:
    key: str  # the blob name (sha256 or git oid); also names the partial file
    path: str
    size: int
    sha256: str | None
    blob_id: str | None
    candidates: list[Candidate]
    partial: Path


def _aligned(n: int) -> int:
    """``n`` rounded down to 64 KiB: range bounds stay on page and block edges."""
    return n - n % (64 * 1024)


@dataclass(frozen=True)
class EngineConfig:
    connections: int = 0  # fixed count; 0 = adaptive between initial and max
    initial_connections: int = 4  # the fewest a pull starts with
    initial_bytes: int = 8 * MiB  # a pull starts with a connection per this many bytes to fetch
    initial_max: int = 32  # and at most this many; the controller may go on to max_connections
    slow_connection: float = 40e6  # bytes/s; below this a connection looks capped
    max_connections: int = 128
    step_gain: float = 1.25  # a widening step is kept when throughput grew by this factor,
    step_gain_capped: float = 1.3  # or by this one when each connection looks capped
    step_keep: float = 1.1  # a step that gained less than that, but this much, is kept and the widening ends
    narrow_keep: float = 0.9  # a step that cost more than this fraction of throughput is undone
    narrow_min: int = 8  # the fewest connections the controller steps down to
    chunk_min: int = 2 * MiB
    chunk_max: int = 16 * MiB
    range_time: float = 0.5  # seconds a range should last at the measured rate (within chunk_min/max)
    # Ranges are sized to keep about this much under way. The hash can only
    # follow the written prefix, and the prefix lags the bytes received by
    # about what is in flight: a wide window starves the hash early in the run
    # and leaves it a tail after the last byte (on 2 cores, 1 GB from nginx:
    # 256 MiB in flight took 9% longer than 64 MiB).
    in_flight: int = 64 * MiB
    # But a range lasts at least this many of a request's round trips (the
    # time to a reused connection's first answer byte): behind latency, or a
    # busy server, the gap between a connection's ranges is bytes not moved.
    request_ranges: float = 16.0
    long_range_time: float = 4.0  # the same when the server is the limit,
    long_chunk_max: int = 64 * MiB  # with larger ranges
    long_in_flight: int = 1024 * MiB  # and more under way,
    long_max_rate: float = 400e6  # while the pull moves less than this (faster, the hash must follow closely)
    buffer_size: int = 1 * MiB
    # The loop asks the kernel to report a body's socket only once about this
    # much waits in it (SO_RCVLOWAT), not at every segment: at most
    # ``rcvlowat`` bytes, and no more than ``rcvlowat_time`` of the
    # connection's rate, so a slow link still shows life. 0 turns it off.
    rcvlowat: int = 256 * KiB
    rcvlowat_time: float = 0.25
    splice: bool = True  # plain HTTP bodies go socket → file inside the kernel (Linux)
    event_loop: bool = True  # loop threads drive every direct connection, HTTP and HTTPS (needs splice)
    loop_threads: int = 2  # event loops, each with its share of the connections
    hash_threads: int = 2  # with the event loop: threads that hash and install
    hash_slice: int = 32 * MiB  # bytes mapped at a time for hashing
    steal_min: int = 2 * MiB
    tail_min: int = 1 * MiB  # smallest range the end of a run is cut into
    hash_lag: int = 64 * MiB  # received past a file's prefix: its prefix range is split
    hash_ahead: int = 64 * MiB  # a hash this far behind its file's prefix gets the CPU first
    stall_timeout: float = 15.0
    max_retries: int = 8  # rounds of failed ranges in a row before a file moves on
    progress_min: int = 4 * MiB  # a failed range that moved this much still counts as progress
    max_integrity_retries: int = 2
    metadata_attempts: int = 4
    tick: float = 0.1  # part maps are saved this often: what a kill -9 can cost
    probe_interval: float = 0.2
    save_every: int = 32 * MiB  # part maps are also saved after this many new bytes
    map_min: int = 4 * MiB  # a file's map is saved on the tick once this much of it is on disk,
    map_age: float = 1.0  # or once its first unsaved bytes are this old (seconds)
    backoff: Backoff = Backoff()


def _steps(cfg: EngineConfig) -> Steps:
    return Steps(cfg.initial_connections, cfg.initial_bytes, cfg.initial_max, cfg.max_connections,
                 cfg.slow_connection, cfg.step_gain, cfg.step_gain_capped, cfg.step_keep, cfg.narrow_keep,
                 cfg.narrow_min, cfg.probe_interval)


def _sizes(cfg: EngineConfig) -> Sizes:
    return Sizes(cfg.chunk_min, cfg.chunk_max, cfg.range_time, cfg.in_flight, cfg.request_ranges,
                 cfg.long_range_time, cfg.long_chunk_max, cfg.long_in_flight, cfg.long_max_rate, cfg.tail_min)


@dataclass(eq=False, kw_only=True)
class _FileState(Item):
    job: FileJob
    verifier: Verifier
    integrity_failures: int = 0
    hashing: bool = False  # one thread at a time feeds the verifier
    unmapped: bool = False  # verified: its part map is gone and must not be written again
    dirty_since: float = 0.0  # when its part map last became out of date

    @classmethod
    def of(cls, job: FileJob, done: Intervals, validator: str | None) -> _FileState:
        return cls(name=job.path, size=job.size, candidates=job.candidates, dest=Destination(job.partial),
                   done=done, validator=validator, job=job, verifier=Verifier(job.size, job.sha256, job.blob_id))


def _file(span: Span) -> _FileState:
    return cast(_FileState, span.item)  # the engine's items are its files


class TransferEngine:
    """Fetch a batch of files. ``on_verified(job)`` runs (in the hasher thread)
    for each file once its partial file holds verified content; the caller
    moves it into the store there.

    Cost per scheduling step is independent of the number of files: files with
    bytes left to hand out sit in a queue, ranges in flight in a set, and the
    hasher only looks at files that received bytes.
    """

    def __init__(
        self,
        http: HttpClient,
        config: EngineConfig = EngineConfig(),
        *,
        on_event: EventSink | None = None,
        repo: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.http = http
        self.cfg = config
        self.on_event = on_event or (lambda _e: None)
        self.repo = repo
        self.clock = clock
        lock = threading.Lock()
        # One lock, three wait queues, so a wake-up reaches only who can act on it.
        self._cv = threading.Condition(lock)  # idle workers: work may have appeared
        self._park = threading.Condition(lock)  # workers above the connection target
        self._sup_cv = threading.Condition(lock)  # the supervisor: end, or part maps to save
        self._threads: list[threading.Thread] = []
        self._emit_lock = threading.Lock()
        self._maps = threading.Lock()  # part-map writes, and a verified file's map removal
        self._unsaved = 0
        self._files: list[_FileState] = []
        self._loop_on = False
        self._hash_q: deque[Item] = deque()  # files whose hash claim the loop took
        self._hash_work = threading.Condition(lock)  # hash threads: a claim is queued
        self._dirty: set[_FileState] = set()
        self._active = 0
        self._files_done = 0
        self._done_bytes = 0  # bytes on disk for unfinished + finished files
        self._total = 0
        self._fatal: BaseException | None = None
        self._bytes = 0  # bytes received this run
        self._sizer = RangeSizer(_sizes(config))
        self._ctl = Controller(_steps(config), self._sizer, fixed=config.connections)
        self._sched = Scheduler(self._sizer, Splits(config.steal_min, config.hash_lag),
                                connections=lambda: self._ctl.target, left=lambda: self._total - self._done_bytes,
                                on_start=self._started, wake=self._cv.notify)
        self._loops: list[IoLoop] = []
        self._workers = Workers(self)
        # Bytes the running hash has yet to go through (a hint, written by the
        # hash threads without the lock): past ``hash_ahead`` the loops pause.
        self._hash_backlog = 0
        self.bad_sources: set[str] = set()
        self.stats: dict[str, Any] = {}

    # -- public ------------------------------------------------------------
    def run(
        self,
        jobs: Sequence[FileJob],
        on_verified: Callable[[FileJob], None],
        cancel: threading.Event | None = None,
    ) -> dict[str, QwenhomeError]:
        """Transfer ``jobs``; returns the errors of files that failed (by key)."""
        self._on_verified = on_verified
        resumed: list[_FileState] = []
        for folder in {job.partial.parent for job in jobs}:
            folder.mkdir(parents=True, exist_ok=True)
        for job in jobs:
            done, validator = partmap.load(job.partial, job.key, job.size)
            f = _FileState.of(job, done, validator)
            self._files.append(f)
            self._done_bytes += done.covered()
            if done.prefix() or job.size == 0:
                resumed.append(f)
        self._active = len(self._files)
        self._total = sum(f.job.size for f in self._files)
        self._loop_on = self.cfg.event_loop and self.cfg.splice and hasattr(os, "splice")
        for f in self._files:
            f.slow = not (self._loop_on and self.http.direct(f.url()))
        self._sched.add(self._files)
        self._loop_on = self._loop_on and bool(self._sched.fast)
        if not self.cfg.connections:
            # Start with a connection per ``initial_bytes`` to fetch (as
            # hf_transfer and aria2 split a file up front), and many for many
            # files, whose requests each wait a round trip. Growing from a few
            # costs a measuring window per step, at the start of every pull.
            todo = sum(f.job.size - f.done.covered() for f in self._files)
            self._ctl.begin(initial_connections(self._ctl.steps, todo, len(self._files)))
        self._check_disk()
        hasher = threading.Thread(target=self._hasher, args=(resumed,), daemon=True, name="qh-hash")
        hasher.start()
        helpers: list[threading.Thread] = []
        if self._loop_on:
            n = max(1, self.cfg.loop_threads)
            self._loops = [IoLoop(self, i, n) for i in range(n)]
            helpers += [threading.Thread(target=lp.run, daemon=True, name=f"qh-loop-{lp.index}") for lp in self._loops]
            helpers += [threading.Thread(target=self._hash_worker, daemon=True, name=f"qh-hash-{i}")
                        for i in range(max(1, self.cfg.hash_threads))]
        for t in helpers:
            t.start()
        with self._cv:
            self._start_workers()
        t_start = self.clock()
        try:
            self._supervise(self._total, cancel)
        finally:
            with self._cv:
                if self._fatal is None and self._active:
                    self._fatal = Cancelled("transfer interrupted")
                self._wake_all()
                workers = list(self._threads)
            for t in workers + helpers:
                t.join(timeout=30)
            hasher.join(timeout=60)
            self._save_maps(force=True)
            for f in self._files:
                f.dest.close()
        elapsed = max(1e-9, self.clock() - t_start)
        self.stats = {"bytes": self._bytes, "seconds": elapsed, "connections": self._ctl.target, "chunk": self._sizer.chunk,
                      "threaded_files": sum(1 for f in self._files if f.slow),
                      "loop_reads": sum(lp.reads for lp in self._loops), "request_ms": round(self._sizer.ttfb * 1000)}
        if self._fatal is not None:
            raise self._fatal
        return {f.job.key: f.error for f in self._files if f.status is Status.FAILED and f.error is not None}

    # -- files -----------------------------------------------------------------
    def _check_disk(self) -> None:
        if not self._files:
            return
        need = sum(f.job.size - f.done.covered() for f in self._files)
        where = self._files[0].job.partial.parent
        try:
            st = os.statvfs(where)
        except OSError:
            return
        free = st.f_bavail * st.f_frsize
        if need > free:
            raise DiskFullError(
                f"need {need / MiB:.1f} MiB at {where}, only {free / MiB:.1f} MiB free",
                needed=need,
                free=free,
            )

    def _settle(self, f: _FileState, status: Status) -> None:
        """A file leaves the active set (under the lock)."""
        f.status = status
        self._active -= 1
        self._sched.cancel(f)
        if status is Status.VERIFIED:
            self._files_done += 1
        if not self._active:
            self._wake_all()

    def _started(self, item: Item) -> None:
        self._emit(ProgressEvent(FILE_START, self.repo, item.name, item.done.covered(), item.size))

    def _make_slow(self, f: Item) -> None:
        """Hand ``f`` to the worker threads for the rest of the run (under the lock)."""
        if self._sched.make_slow(f):
            self._start_workers()
            self._cv.notify_all()

    def _abandon_loop(self) -> None:
        """The loop cannot write here (splice refused): threads take every file."""
        self._loop_on = False
        self._workers.splice_ok = False
        for f in self._files:
            if f.active:
                self._make_slow(f)

    def _start_workers(self) -> None:
        """Start threads up to the target (under the lock); they are never more
        than the connections in use, so idle capacity costs nothing. With the
        event loop on, threads serve only the files it handed over."""
        if self._loop_on and not any(f.slow and f.active for f in self._files):
            return
        while len(self._threads) < self._ctl.target:
            t = threading.Thread(target=self._workers.run, args=(len(self._threads),), daemon=True,
                                 name=f"qh-xfer-{len(self._threads)}")
            self._threads.append(t)
            t.start()

    def _abort(self, exc: BaseException) -> None:
        """End the run with ``exc`` (the first such error wins); everyone looks."""
        with self._cv:
            if self._fatal is None:
                self._fatal = exc
            self._wake_all()

    def _mark_answered(self, f: Item) -> None:
        """``f``'s first answer came: its other ranges may start (``_carve_next``)."""
        if not f.answered:
            with self._cv:
                f.answered = True
                self._cv.notify_all()  # threads and idle loops waiting for work

    def _wake_all(self) -> None:
        """The run ends or failed: everyone must look (under the lock)."""
        for cv in (self._cv, self._park, self._sup_cv, self._hash_work):
            cv.notify_all()

    # -- scheduling (under self._cv) --------------------------------------------
    def _next_range(self, wid: int) -> Span | None:
        with self._cv:
            while True:
                if self._fatal is not None or not self._active:
                    return None
                if wid >= self._ctl.target:
                    self._park.wait(5.0)  # woken when the target grows or the run ends
                    continue
                now = self.clock()
                r = self._sched.next_span(now, slow=True)
                if r is not None:
                    return r
                self._cv.wait(0.1)  # steal opportunities and back-offs are time-based

    def _next_fast(self, now: float) -> Span | None:
        """The event loop's next range (under the lock): a stuck prefix first,
        then new bytes, then the end-game."""
        return self._sched.next_span(now, slow=False)

    # -- workers -------------------------------------------------------------
    def _drop(self, r: Span) -> None:
        self._sched.drop(r)

    def _restart_whole(self, r: Span, no_ranges: bool) -> None:
        """A 200 for a range (ranges ignored, or If-Range found the content
        changed): the file starts again from byte 0 on that very answer."""
        f = _file(r)
        size = f.job.size
        with self._cv:
            f.gen += 1
            self._done_bytes -= f.done.covered()
            f.done.clear()
            f.verifier = Verifier(size, f.job.sha256, f.job.blob_id)
            f.no_ranges = no_ranges
            f.validator = None
            self._sched.restart(r)

    def _record(self, r: Span, pos: int, n: int) -> bool:
        """``n`` bytes of ``r`` are on disk at ``pos`` (under the lock; the
        range is current). True when the caller now holds the file's hash claim."""
        f = _file(r)
        grows_prefix = pos <= f.done.prefix()
        f.done.add(pos, pos + n)
        r.cur = pos + n
        if r.cur >= r.end:
            f.failures = 0  # a whole range came: the source works
        if f not in self._dirty:
            f.dirty_since = self.clock()
            self._dirty.add(f)
        self._bytes += n
        self._done_bytes += n
        self._unsaved += n
        if self._unsaved >= self.cfg.save_every:
            self._sup_cv.notify()  # bound what a kill -9 can cost, however fast the link
        return grows_prefix and self._claim_hash(f)

    def _failed(self, r: Span, exc: BaseException) -> None:
        f = _file(r)
        with self._cv:
            self._drop(r)
            if isinstance(exc, DiskFullError | StoreError) or not isinstance(exc, QwenhomeError):
                if self._fatal is None:
                    self._fatal = exc
                self._wake_all()
                return
            if r.gen != f.gen or not f.active:
                return
            self._sched.requeue(f)
            if r.cand != f.cand:
                return  # from a source the file has left: no verdict on the one it uses now
            if exc.transient:
                if r.cur - r.start >= self.cfg.progress_min:
                    f.failures = 0  # it moved real bytes: a cut line, not a dead source
                if r.tries >= f.failures:
                    # Counted once per round: when a blip cuts every
                    # connection at once, its ranges all started before it.
                    f.failures += 1
                if f.failures <= self.cfg.max_retries:
                    ra = exc.context.get("retry_after")
                    delay = self.cfg.backoff.delay(f.failures, ra if isinstance(ra, float | int) else None)
                    f.ready_at = self.clock() + delay
                    self._emit(ProgressEvent(RETRY, self.repo, f.job.path, message=f"{exc.code}: {exc.message}; retry in {delay:.1f}s"))
                    return  # idle workers look again within 0.1 s; the back-off is longer
            self._next_candidate(f, exc)
            self._cv.notify()

    def _next_candidate(self, f: _FileState, exc: QwenhomeError) -> None:
        """Move ``f`` to its next usable source, or fail it (under the lock)."""
        f.failures = 0
        f.direct_url = None
        f.validator = None
        f.ready_at = 0.0
        nxt = f.cand + 1
        while nxt < len(f.job.candidates) and f.job.candidates[nxt].source.name in self.bad_sources:
            nxt += 1
        if nxt >= len(f.job.candidates):
            f.error = exc
            self._settle(f, Status.FAILED)
            self._emit(ProgressEvent(FILE_ERROR, self.repo, f.job.path, message=exc.one_line()))
            return
        f.cand = nxt
        self._sched.requeue(f)
        src = f.job.candidates[nxt].source
        self._emit(ProgressEvent(SOURCE, self.repo, f.job.path, message=f"{exc.code}: switching to {src.label}"
                                 + (f" ({src.url})" if src.named else "")))

    # -- hashing -----------------------------------------------------------------
    # sha256 is sequential, so each file has one verifier fed in order, by one
    # thread at a time: whoever grows the file's written prefix claims it and
    # hashes up to the prefix, then looks again before letting go. Hashing thus
    # runs in the threads that just wrote the bytes (page cache still warm),
    # several files at once, and takes a fair share of a busy CPU instead of
    # trailing behind the transfer in one thread.
    def _claim_hash(self, f: _FileState) -> bool:
        """Take ``f``'s verifier if it has work (under the lock)."""
        if f.hashing or not f.active:
            return False
        if f.done.prefix() <= f.verifier.hashed < f.job.size:
            return False
        f.hashing = True
        return True

    def _hash_while_claimed(self, item: Item) -> None:
        """Hash ``item`` up to its written prefix until caught up (the claim is held
        on entry), verifying and installing it once complete."""
        f = cast(_FileState, item)
        try:
            while True:
                with self._cv:
                    verifier, gen, prefix = f.verifier, f.gen, f.done.prefix()
                    if (not f.active or self._fatal is not None
                            or prefix <= verifier.hashed < f.job.size):
                        f.hashing = False  # growth from now on finds the claim free
                        return
                    f.open()  # a resumed file may be complete already
                self._hash_span(f, verifier, prefix, gen)
        except BaseException as exc:
            with self._cv:
                f.hashing = False
            self._abort(exc)

    def _hash_worker(self) -> None:
        """With the event loop: hash (and install) the files whose claim it took."""
        while True:
            with self._cv:
                while not self._hash_q:
                    if self._fatal is not None or not self._active:
                        return
                    self._hash_work.wait(0.5)
                f = self._hash_q.popleft()
            self._hash_while_claimed(f)

    def _hasher(self, resumed: list[_FileState]) -> None:
        """Files with bytes on disk from an earlier run (or empty ones): hash
        what is there; workers take over as the prefix grows."""
        for f in resumed:
            with self._cv:
                if self._fatal is not None or not self._active:
                    return
                claimed = self._claim_hash(f)
            if claimed:
                self._hash_while_claimed(f)

    def _hash_span(self, f: _FileState, verifier: Verifier, stop: int, gen: int) -> None:
        """Hash ``[verifier.hashed, stop)`` straight from the page cache through a
        read-only mapping: no copy into a buffer (copies are what a transfer
        costs most on a busy machine)."""
        pos = verifier.hashed
        try:
            while pos < stop and f.gen == gen and self._fatal is None:
                self._hash_backlog = stop - pos
                end = min(stop, pos + self.cfg.hash_slice)
                try:
                    if end - pos <= 256 * 1024:
                        # A small span costs less copied than mapped and unmapped.
                        data = os.pread(f.dest.fd, end - pos, f.dest.offset + pos)
                        if len(data) < end - pos:
                            raise OSError(errno.EIO, f"partial file shorter than {end} bytes")
                        verifier.update(data)
                    else:
                        at, stop_at = f.dest.offset + pos, f.dest.offset + end
                        base = at - at % mmap.ALLOCATIONGRANULARITY
                        with mmap.mmap(f.dest.fd, stop_at - base, flags=mmap.MAP_SHARED | _MAP_POPULATE,
                                       prot=mmap.PROT_READ, offset=base) as m, memoryview(m) as view:
                            verifier.update(view[at - base : stop_at - base])
                except (OSError, ValueError) as exc:
                    if f.gen == gen:
                        self._abort(translate_os_error(exc if isinstance(exc, OSError) else OSError(str(exc)),
                                                       f.job.partial))
                    return
                pos = end
        finally:
            self._hash_backlog = 0  # however the span ends, the loops must not keep pausing
        if verifier.hashed == f.job.size and f.gen == gen:
            self._finish(f, verifier)

    def _finish(self, f: _FileState, verifier: Verifier) -> None:
        with self._cv:
            if not f.active or (f.job.size > 0 and not f.done.covers(0, f.job.size)):
                return
        if verifier.ok():
            f.dest.close()
            # Under the map lock: a save that took this file's map before it
            # was verified would otherwise write it back after the unlink.
            with self._maps:
                with self._cv:
                    f.unmapped = True
                    self._dirty.discard(f)
                partmap.map_path(f.job.partial).unlink(missing_ok=True)
            if f.job.size == 0:
                f.job.partial.touch()
            try:
                self._on_verified(f.job)
            except BaseException as exc:
                with self._cv:
                    self._fatal = exc
                    self._wake_all()
                return
            with self._cv:
                self._dirty.discard(f)
                self._settle(f, Status.VERIFIED)
            self._emit(ProgressEvent(FILE_DONE, self.repo, f.job.path, f.job.size, f.job.size))
            return
        err = IntegrityError(
            f"{f.job.path}: {verifier.algorithm} mismatch (expected {verifier.expected[:12]}…, got {verifier.hexdigest()[:12]}…)",
            path=f.job.path,
        )
        with self._cv:
            f.gen += 1
            self._done_bytes -= f.done.covered()
            f.done.clear()
            self._sched.cancel(f)
            f.verifier = Verifier(f.job.size, f.job.sha256, f.job.blob_id)
            f.integrity_failures += 1
            self._dirty.add(f)
            try:
                os.ftruncate(f.dest.fd, 0)
                os.ftruncate(f.dest.fd, f.dest.offset + f.job.size)
            except OSError as exc:
                self._fatal = translate_os_error(exc, f.job.partial)
            self._sched.requeue(f)
            src = f.job.candidates[f.cand].source
            self._emit(ProgressEvent(RETRY, self.repo, f.job.path, message=f"{err.code} from {src.label}; refetching"))
            has_other = any(c.source.name not in self.bad_sources and c.source.name != src.name for c in f.job.candidates)
            if has_other:
                self.bad_sources.add(src.name)
                self._next_candidate(f, err)
            elif f.integrity_failures > self.cfg.max_integrity_retries:
                self._next_candidate(f, err)
            self._cv.notify_all()  # the whole file is to fetch again

    # -- supervision ---------------------------------------------------------------
    def _supervise(self, total: int, cancel: threading.Event | None) -> None:
        last_t = self.clock()
        last_bytes = 0
        speed = 0.0
        last_files_t = last_t
        last_emit = last_t - self.cfg.tick
        while True:
            with self._cv:
                if self._fatal is not None or not self._active:
                    break
                self._sup_cv.wait(self.cfg.tick)
                if cancel is not None and cancel.is_set() and self._fatal is None:
                    self._fatal = Cancelled("pull cancelled")
                    self._wake_all()
                    break
                now = self.clock()
                received = self._bytes
                done_total = self._done_bytes
                files_done = self._files_done
            self._save_maps()
            if now - last_emit < self.cfg.tick * 0.9:
                continue  # woken early to save maps: progress keeps its pace
            last_emit = now
            dt = now - last_t
            if dt > 0:
                inst = (received - last_bytes) / dt
                speed = inst if speed == 0 else 0.7 * speed + 0.3 * inst
            last_t, last_bytes = now, received
            self._emit(ProgressEvent(PROGRESS, self.repo, None, done_total, total, speed, files_done, len(self._files)))
            if now - last_files_t >= 0.5:  # per-file progress, less often
                last_files_t = now
                with self._cv:
                    active = {r.item: (r.item.done.covered(), r.item.size) for r in self._sched.inflight}
                for item, (done_f, size_f) in active.items():
                    self._emit(ProgressEvent(PROGRESS, self.repo, item.name, done_f, size_f))
            waited = sum(lp.waited for lp in self._loops)
            with self._cv:
                loops = len(self._loops) if self._loop_on else 0
                if self._ctl.observe(now, received, waited, len(self._sched.inflight), loops):
                    self._park.notify_all()
                    self._start_workers()

    def _save_maps(self, force: bool = False) -> None:
        """Write the part maps of files with new bytes. On the regular tick a
        file with less than ``map_min`` on disk waits until its first unsaved
        bytes are ``map_age`` old: most small files are done by then, and a
        pull of many would otherwise rewrite hundreds of maps every tick.
        Forced saves take every file."""
        now = self.clock()
        with self._maps:
            with self._cv:
                if force:
                    files = self._files
                    self._dirty.clear()
                else:
                    files = [f for f in self._dirty
                             if f.done.covered() >= self.cfg.map_min or now - f.dirty_since >= self.cfg.map_age]
                    self._dirty.difference_update(files)
                snap = [
                    (f.job.partial, f.job.key, f.job.size, Intervals(list(f.done.starts), list(f.done.ends)),
                     f.validator)
                    for f in files
                    if not f.unmapped and f.done.starts  # a failed file's bytes serve the next round
                ]
                self._unsaved = 0
            for partial, key, size, done, validator in snap:
                try:
                    partmap.save(partial, key, size, done, validator)
                except OSError:
                    pass  # a lost map only costs re-downloading; never fatal

    def _emit(self, event: ProgressEvent) -> None:
        with self._emit_lock:  # sinks see one event at a time, whichever thread sends it
            try:
                self.on_event(event)
            except Exception:
                pass  # a broken progress consumer must not break the transfer
