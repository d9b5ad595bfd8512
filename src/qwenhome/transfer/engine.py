"""The transfer engine: ranged, parallel, resumable, verified.

:class:`TransferEngine` runs one batch of files. It builds the parts, starts
the threads and supervises; the parts decide:

- :mod:`.scheduler` what range goes next (largest files first, every other
  range to the smallest file waiting, the prefix boost, the end-game), over
  the generic work items of :mod:`.work`;
- :mod:`.sizing` how long a range is, and :mod:`.controller` how many
  connections run (a state machine fed the bytes received);
- :mod:`.files` each file's recording, hash claim and finish, and
  :mod:`.maps` when part maps are written;
- :mod:`.failover` whether a failed range backs off or moves its file to
  the next source;
- :mod:`.state` the shared state under one lock, :mod:`.hasher` the hash
  pipeline, and :mod:`.run` the :mod:`.port` through which the I/O paths
  reach them: the event loops (:mod:`.evloop`) for sources reached without
  a proxy, worker threads (:mod:`.workers`) for the rest.

docs/architecture.md follows one byte from the socket to the snapshot link
and tells the story of every tuning number.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..errors import DiskFullError, QwenhomeError
from ..net import HttpClient
from ..progress import PROGRESS, EventSink, ProgressEvent
from . import partmap
from .conns import Gather
from .controller import Controller, Steps, initial_connections
from .evloop import IoLoop
from .failover import Retries
from .files import FileJob, FileState
from .hasher import Hasher
from .maps import Saving
from .pace import MIN_RATE, MinRate
from .preconnect import Preconnect
from .retry import Backoff
from .run import Run
from .scheduler import Splits
from .sizing import MiB, RangeSizer, Sizes
from .state import Cancelled, State
from .work import Candidate, Status

__all__ = ["Cancelled", "Candidate", "EngineConfig", "FileJob", "TransferEngine", "Tuning"]

log = logging.getLogger(__name__)

TICK = 0.1  # seconds between the supervisor's looks: progress, the controller, part maps (what a kill -9 costs)
FILE_PROGRESS = 0.5  # seconds between per-file progress events
HASH_THREADS = 2  # with the event loops: threads that hash and install the files whose claim a loop took


@dataclass(frozen=True)
class Tuning:
    """The parts' numbers: for tests and benchmarks, not for users. Each
    part's module says why each default is what it is."""

    steps: Steps = Steps()  # the connection-count controller (controller.py)
    sizes: Sizes = Sizes()  # range sizes (sizing.py)
    splits: Splits = Splits()  # when a range under way is split (scheduler.py)
    saving: Saving = Saving()  # when part maps are saved (maps.py)
    gather: Gather = Gather()  # how much of a body a socket gathers before it is read (conns.py)
    splice: bool = True  # plain-HTTP bodies go socket → file in the kernel (False: through a buffer, no event loop)


@dataclass(frozen=True)
class EngineConfig:
    """What a user (config.toml, the command line) or a caller sets."""

    connections: int = 0  # a fixed connection count; 0: the controller chooses
    stall_timeout: float = 15.0  # seconds a body may stay silent before its range is asked again
    rate_window: float = 30.0  # a request bringing under min_rate over this many seconds is a stall too
    min_rate: float = MIN_RATE  # bytes/s (pace.py); 0 turns the rule off
    max_retries: int = 8  # rounds of failed ranges in a row before a file moves to its next source
    backoff: Backoff = Backoff()  # the wait between retries (a server's Retry-After wins)
    loop_threads: int = 2  # event-loop threads for sources reached without a proxy (0: worker threads only)
    every_map: bool = False  # save every file's part map each tick (a reader streams partial files by them)
    tuning: Tuning = Tuning()


class TransferEngine:
    """Fetch a batch of files. ``on_verified(job)`` runs (in a hash thread)
    for each file once its partial file holds verified content; the caller
    moves it into the store there.

    Cost per scheduling step is independent of the number of files: files with
    bytes left to hand out sit in a queue, ranges in flight in a set, and the
    hash only looks at files that received bytes.
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
        self._emit_lock = threading.Lock()
        self.bad_sources: set[str] = set()  # sources that served bytes failing verification
        self.stats: dict[str, Any] = {}

    def run(
        self,
        jobs: Sequence[FileJob],
        on_verified: Callable[[FileJob], None],
        cancel: threading.Event | None = None,
        warm: Preconnect | None = None,
    ) -> dict[str, QwenhomeError]:
        """Transfer ``jobs``; returns the errors of files that failed (by key).
        ``warm``: connections opened ahead, for the event loops to take first."""
        files, resumed = _load(jobs)
        run = self._prepare(files, on_verified)
        state = run.s
        _check_disk(files)
        hasher = threading.Thread(target=run.hasher.resumed, args=(resumed,), daemon=True, name="qh-hash")
        hasher.start()
        loops: list[IoLoop] = []
        helpers: list[threading.Thread] = []
        if state.loop_on:
            n = self.cfg.loop_threads
            loops = [IoLoop(run, i, n, self.cfg.tuning.gather) for i in range(n)]
            helpers += [threading.Thread(target=lp.run, daemon=True, name=f"qh-loop-{lp.index}") for lp in loops]
            helpers += [threading.Thread(target=run.hasher.worker, daemon=True, name=f"qh-hash-{i}")
                        for i in range(HASH_THREADS)]
        _adopt(loops, warm, self.clock())
        if run.xet is not None:
            helpers += run.xet.threads()
        for t in helpers:
            t.start()
        run.launch()
        t_start = self.clock()
        try:
            self._supervise(run, loops, cancel)
        finally:
            workers = run.end(Cancelled("transfer interrupted"))
            for t in workers + helpers:
                t.join(timeout=30)
            hasher.join(timeout=60)
            state.maps.save(files, force=True)
            for f in files:
                f.dest.close()
        elapsed = max(1e-9, self.clock() - t_start)
        self.stats = {"bytes": state.received, "seconds": elapsed,
                      "xet_bytes": sum(f.job.xet.xet_bytes for f in files if f.job.xet is not None), "connections": state.ctl.target,
                      "chunk": state.ctl.sizer.chunk, "threaded_files": sum(1 for f in files if f.slow),
                      "loop_reads": sum(lp.reads for lp in loops), "request_ms": round(state.ctl.sizer.ttfb * 1000)}
        if state.fatal is not None:
            raise state.fatal
        return {f.job.key: f.error for f in files if f.status is Status.FAILED and f.error is not None}

    def _prepare(self, files: list[FileState], on_verified: Callable[[FileJob], None]) -> Run:
        """The run's parts, its files queued on their paths."""
        cfg, tuning = self.cfg, self.cfg.tuning
        controller = Controller(tuning.steps, RangeSizer(tuning.sizes), fixed=cfg.connections)
        saving = replace(tuning.saving, min_bytes=0) if cfg.every_map else tuning.saving
        state = State(files, controller, clock=self.clock, emit=self._emit, repo=self.repo,
                      splits=tuning.splits, saving=saving, bad_sources=self.bad_sources)
        run = Run(self.http, state, Hasher(state, on_verified), stall_timeout=cfg.stall_timeout,
                  min_rate=MinRate(cfg.rate_window, cfg.min_rate),
                  retries=Retries(cfg.max_retries, cfg.backoff), splice=tuning.splice)
        loop_on = cfg.loop_threads > 0 and tuning.splice and hasattr(os, "splice")
        for f in files:
            f.slow = not (loop_on and self.http.direct(f.url()))
        state.sched.add(files)
        state.loop_on = loop_on and bool(state.sched.fast)
        if any(f.job.xet is not None for f in files):
            from .xetrun import XetRun  # (the Xet format loads numpy and lz4: only for Xet files)

            run.xet = XetRun(state, run.hasher, Retries(cfg.max_retries, cfg.backoff), direct=self.http.direct,
                             start_workers=run.start_workers)
            with state.lock:
                run.xet.begin()
        if not cfg.connections:
            todo = sum(f.left() for f in files)
            controller.begin(initial_connections(controller.steps, todo, len(files)))
        return run

    def _supervise(self, run: Run, loops: list[IoLoop], cancel: threading.Event | None) -> None:
        """Until the run ends: part maps, progress, and the controller's ticks."""
        last_t = self.clock()
        last_bytes = 0
        speed = 0.0
        last_files_t = last_t
        last_emit = last_t - TICK
        while True:
            tick = run.tick(TICK, cancel)
            if tick is None:
                break
            now, received, done_total, files_done = tick
            run.s.maps.save(run.s.files)
            if now - last_emit < TICK * 0.9:
                continue  # woken early to save maps: progress keeps its pace
            last_emit = now
            dt = now - last_t
            if dt > 0:
                inst = (received - last_bytes) / dt
                speed = inst if speed == 0 else 0.7 * speed + 0.3 * inst
            last_t, last_bytes = now, received
            self._emit(ProgressEvent(PROGRESS, self.repo, None, done_total, run.s.total, speed, files_done,
                                     len(run.s.files)))
            if now - last_files_t >= FILE_PROGRESS:
                last_files_t = now
                for item, (done_f, size_f) in run.in_progress().items():
                    self._emit(ProgressEvent(PROGRESS, self.repo, item.name, done_f, size_f))
            run.observe(now, sum(lp.waited for lp in loops), len(loops))

    def _emit(self, event: ProgressEvent) -> None:
        with self._emit_lock:  # sinks see one event at a time, whichever thread sends it
            try:
                self.on_event(event)
            except Exception:  # a broken progress consumer must not break the transfer
                log.debug("progress consumer failed", exc_info=True)


def _load(jobs: Sequence[FileJob]) -> tuple[list[FileState], list[FileState]]:
    """The files of ``jobs`` with what an earlier run left on disk, and those
    of them whose prefix the hash can start on at once."""
    for folder in {job.partial.parent for job in jobs}:
        folder.mkdir(parents=True, exist_ok=True)
        partmap.sweep(folder, {job.partial.name for job in jobs if job.partial.parent == folder})
    files: list[FileState] = []
    resumed: list[FileState] = []
    for job in jobs:
        done, validator = partmap.load(job.partial, job.key, job.size)
        f = FileState.of(job, done, validator)
        files.append(f)
        if done.prefix() or job.size == 0:
            resumed.append(f)
    return files, resumed


def _adopt(loops: list[IoLoop], warm: Preconnect | None, now: float) -> None:
    """Share the connections opened ahead over the loops (closed without loops)."""
    if warm is None:
        return
    socks = warm.take()
    for i, sock in enumerate(socks):
        if loops:
            loops[i % len(loops)].pool.adopt(sock, warm.origin, now)
        else:
            sock.close()


def _check_disk(files: list[FileState]) -> None:
    if not files:
        return
    need = sum(f.left() for f in files)
    where = files[0].job.partial.parent
    try:
        st = os.statvfs(where)
    except OSError as exc:  # the writes themselves still report a full disk
        log.debug("free space at %s not known (%s): not checked", where, exc)
        return
    free = st.f_bavail * st.f_frsize
    if need > free:
        raise DiskFullError(
            f"need {need / MiB:.1f} MiB at {where}, only {free / MiB:.1f} MiB free",
            needed=need,
            free=free,
        )
