"""A run's shared state: one lock, its wait queues, the files, the scheduler,
the controller, the part maps and the first fatal error.

The port the I/O paths call (:mod:`.run`) and the hash pipeline
(:mod:`.hasher`) both work on it; neither calls the other's side. Methods
marked "under the lock" expect the caller to hold ``lock``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..errors import EXIT_INTERRUPTED, IntegrityError, QwenhomeError
from ..progress import FILE_ERROR, FILE_START, SOURCE, ProgressEvent
from .controller import Controller
from .failover import next_candidate
from .files import FileState
from .maps import PartMaps, Saving
from .scheduler import Scheduler, Splits
from .work import Item, Span, Status


class Cancelled(QwenhomeError):
    code = "cancelled"
    exit_code = EXIT_INTERRUPTED


class State:
    def __init__(self, files: list[FileState], controller: Controller, *,
                 clock: Callable[[], float] = time.monotonic,
                 emit: Callable[[ProgressEvent], None] = lambda _e: None, repo: str = "",
                 splits: Splits = Splits(), saving: Saving = Saving(),
                 bad_sources: set[str] | None = None) -> None:
        self.clock = clock
        self.files = files
        self.ctl = controller
        self.repo = repo
        self._emit = emit
        lock = threading.Lock()
        self.lock = lock
        # One lock, four wait queues, so a wake-up reaches only who can act on it.
        self.work = threading.Condition(lock)  # idle workers and loops: work may have appeared
        self.park = threading.Condition(lock)  # workers above the connection target
        self.sup = threading.Condition(lock)  # the supervisor: end, or part maps to save
        self.hash_work = threading.Condition(lock)  # hash threads: a claim is queued
        self.others: list[threading.Condition] = []  # more queues on the lock (the Xet planners')
        self.fatal: BaseException | None = None
        self.active = len(files)
        self.files_done = 0
        self.total = sum(f.size for f in files)
        self.done_bytes = sum(f.done.covered() for f in files)  # on disk, finished files included
        self.received = 0  # bytes received this run
        self.share_bytes: dict[str, int] = {}  # of them, by the share of the span that brought them
        self.loop_on = False  # the event loops serve direct sources (cleared if they cannot)
        self.sched = Scheduler(controller.sizer, splits, connections=lambda: self.ctl.target,
                               left=lambda: self.total - self.done_bytes, on_start=self._started,
                               wake=self.work.notify, clock=clock)
        self.maps = PartMaps(lock, clock, saving)
        # Sources that served bytes failing verification: left for the rest of the run.
        self.bad_sources: set[str] = set() if bad_sources is None else bad_sources
        # The Xet side's hooks (xetrun.py): a file settled; a file's bytes
        # failed verification (True: the Xet side took the verdict). Under the lock.
        self.on_settle: Callable[[FileState], None] = lambda _f: None
        self.on_discard: Callable[[FileState, IntegrityError], bool] = lambda _f, _e: False
        # A file's plain candidates are used up: True when its Xet side takes the rest.
        self.on_exhausted: Callable[[FileState, QwenhomeError], bool] = lambda _f, _e: False

    @property
    def stopped(self) -> bool:
        """The run ended or failed (a hint when read without the lock)."""
        return self.fatal is not None or not self.active

    def emit(self, kind: str, item: Item, done: int = 0, total: int = 0, message: str = "") -> None:
        """A progress event about ``item``."""
        self._emit(ProgressEvent(kind, self.repo, item.name, done, total, message=message))

    def _started(self, item: Item) -> None:
        if item.parent is not None:  # a part of a file (a xorb range): the file starts once
            item = item.parent
            if item.started:
                return
            item.started = True
        self.emit(FILE_START, item, item.done.covered(), item.size)

    def wake_all(self) -> None:
        """The run ends or failed: everyone must look (under the lock)."""
        for cv in (self.work, self.park, self.sup, self.hash_work, *self.others):
            cv.notify_all()

    def abort(self, exc: BaseException) -> None:
        """End the run with ``exc`` (the first such error wins); everyone looks."""
        with self.lock:
            if self.fatal is None:
                self.fatal = exc
            self.wake_all()

    def settle(self, f: FileState, status: Status) -> None:
        """A file leaves the active set (under the lock)."""
        f.status = status
        self.active -= 1
        self.sched.cancel(f)
        self.on_settle(f)
        if status is Status.VERIFIED:
            self.files_done += 1
        if not self.active:
            self.wake_all()

    def took(self, span: Span, n: int) -> None:
        """``span`` brought ``n`` bytes (under the lock): received, and by its share."""
        self.received += n
        if span.share:
            self.share_bytes[span.share] = self.share_bytes.get(span.share, 0) + n

    def fail(self, f: FileState, exc: QwenhomeError) -> None:
        """No source is left for ``f`` (under the lock)."""
        f.error = exc
        self.settle(f, Status.FAILED)
        self.emit(FILE_ERROR, f, message=exc.one_line())

    def move_on(self, f: FileState, exc: QwenhomeError) -> None:
        """Move ``f`` to its next usable source, or fail it (under the lock)."""
        if not next_candidate(f, self.bad_sources):
            if not self.on_exhausted(f, exc):
                self.fail(f, exc)
            return
        self.sched.requeue(f)
        src = f.candidate().source
        self.emit(SOURCE, f, message=f"{exc.code}: switching to {src.label}" + (f" ({src.url})" if src.named else ""))
