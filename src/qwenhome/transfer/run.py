"""The port the I/O paths call, over a run's shared state.

:class:`Run` implements :class:`.port.Port`: the event loops and worker
threads ask it for spans and tell it what happened; it asks the scheduler,
records bytes into the files, hands hash claims to the :class:`.hasher.Hasher`
and judges failures. It also keeps the worker threads (started up to the
connection target) and the engine's supervisor calls on it each tick.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, cast

from ..errors import IntegrityError, QwenhomeError, StoreError
from ..progress import RETRY
from .failover import Retries, retry_delay
from .files import FileState
from .hasher import Hasher
from .pace import MinRate
from .state import Cancelled, State
from .work import Item, Span, Status
from .workers import Workers

if TYPE_CHECKING:
    from ..net import HttpClient
    from .xetrun import XetRun
    from .xorbs import XorbItem


ACTIVE = Status.ACTIVE


def _file(span: Span) -> FileState:
    return cast(FileState, span.item)  # a run's items are its files


class Run:
    """Every method takes the run's lock unless it says "under the lock"."""

    def __init__(self, http: HttpClient, state: State, hasher: Hasher, *, stall_timeout: float,
                 min_rate: MinRate = MinRate(),
                 retries: Retries = Retries(), splice: bool = True) -> None:
        self.http = http
        self.s = state
        self.clock = state.clock
        self.stall_timeout = stall_timeout
        self.min_rate = min_rate
        self.splice = splice
        self.hasher = hasher
        self._retries = retries
        self._workers = Workers(self)
        self._threads: list[threading.Thread] = []
        self.xet: XetRun | None = None  # the Xet side, when a file may come through xorbs (the engine sets it)

    # -- the engine's side --------------------------------------------------------------
    def tick(self, seconds: float, cancel: threading.Event | None) -> tuple[float, int, int, int] | None:
        """The supervisor's pause: until ``seconds`` pass, maps are due or the
        run ends. Then (now, bytes received, bytes on disk, files done), or
        None when the run is over (a set ``cancel`` ends it)."""
        s = self.s
        with s.lock:
            if s.stopped:
                return None
            s.sup.wait(seconds)
            if cancel is not None and cancel.is_set() and s.fatal is None:
                s.fatal = Cancelled("pull cancelled")
                s.wake_all()
                return None
            return self.clock(), s.received, s.done_bytes, s.files_done

    def observe(self, now: float, waited: float, loops: int) -> None:
        """The controller's tick: ``waited`` seconds the ``loops`` event loops
        spent waiting for sockets so far."""
        s = self.s
        with s.lock:
            if s.ctl.observe(now, s.received, waited, len(s.sched.inflight), loops if s.loop_on else 0):
                s.park.notify_all()
                self.start_workers()
            if self.xet is not None:
                self.xet.sharing.observe(now)

    def in_progress(self) -> dict[Item, tuple[int, int]]:
        """The items with spans under way: (bytes on disk, size)."""
        with self.s.lock:
            items = {sp.item.parent or sp.item for sp in self.s.sched.inflight}
            return {item: (item.done.covered(), item.size) for item in items}

    def launch(self) -> None:
        """Start the worker threads the run needs now."""
        with self.s.lock:
            self.start_workers()

    def end(self, exc: BaseException) -> list[threading.Thread]:
        """The run is over: ``exc`` unless it ended otherwise; everyone looks.
        Returns the worker threads to join."""
        s = self.s
        with s.lock:
            if s.fatal is None and s.active:
                s.fatal = exc
            s.wake_all()
            return list(self._threads)

    def start_workers(self) -> None:
        """Start threads up to the target (under the lock); they are never more
        than the connections in use, so idle capacity costs nothing. With the
        event loops on, threads serve only the files they handed over."""
        s = self.s
        if s.loop_on and not s.sched.slow and not any(f.slow and f.active for f in s.files):
            return
        while len(self._threads) < s.ctl.target:
            t = threading.Thread(target=self._workers.run, args=(len(self._threads),), daemon=True,
                                 name=f"qh-xfer-{len(self._threads)}")
            self._threads.append(t)
            t.start()

    def _make_slow(self, item: Item) -> None:
        """Hand ``item`` to the worker threads for the rest of the run (under the lock)."""
        if self.s.sched.make_slow(item):
            self.start_workers()
            self.s.work.notify_all()

    # -- work ------------------------------------------------------------------------------
    @property
    def stopped(self) -> bool:
        return self.s.stopped

    def next_span(self, wid: int) -> Span | None:
        s = self.s
        with s.lock:
            while True:
                if s.stopped:
                    return None
                if wid >= s.ctl.target:
                    s.park.wait(5.0)  # woken when the target grows or the run ends
                    continue
                span = s.sched.next_span(self.clock(), slow=True)
                if span is not None:
                    return span
                s.work.wait(0.1)  # steal opportunities and back-offs are time-based

    def loop_work(self, index: int, count: int, busy: int) -> tuple[list[Span], int] | None:
        s = self.s
        with s.lock:
            if s.stopped or not s.loop_on:
                return None
            now = self.clock()
            share = self._share(index, count)
            starts: list[Span] = []
            while busy + len(starts) < share:
                span = s.sched.next_span(now, slow=False)
                if span is None:
                    break
                starts.append(span)
            if not busy and not starts:
                s.work.wait(0.05)  # nothing to move: woken by new work
            return starts, share

    def _share(self, index: int, count: int) -> int:
        """Loop ``index``'s part of the connection target (under the lock)."""
        target = self.s.ctl.target
        return target // count + (1 if index < target % count else 0)

    def span_done(self, span: Span, index: int, count: int, busy: int, more: bool) -> Span | None:
        s = self.s
        with s.lock:
            s.sched.drop(span)
            if more and s.fatal is None and busy < self._share(index, count):
                # The next span at once, on this connection: waiting for the
                # loop's next turn leaves it idle while the other events run.
                return s.sched.next_span(self.clock(), slow=False)
            return None

    def drop(self, span: Span) -> None:
        with self.s.lock:
            self.s.sched.drop(span)

    # -- bytes ---------------------------------------------------------------------------
    # (bounds and record run for every buffer a loop moves: kept to the bare reads.)
    def bounds(self, span: Span) -> tuple[bool, int, int]:
        s = self.s
        item = span.item
        with s.lock:
            return span.gen == item.gen and item.status is ACTIVE and s.fatal is None, span.cur, span.end

    def record(self, span: Span, pos: int, n: int, *, queue_hash: bool) -> tuple[bool, int, int] | None:
        s = self.s
        if span.item.decoded:
            return self._record_decoded(span, pos, n, queue_hash)
        f = cast(FileState, span.item)  # the item is a file
        with s.lock:
            if span.gen != f.gen:
                return None
            claimed = n > 0 and f.record(span, pos, n)
            if n > 0:
                s.took(span, n)
                s.done_bytes += n
                if s.maps.touched(f, n):
                    s.sup.notify()  # bound what a kill -9 can cost, however fast the link
            if claimed and queue_hash:
                self.hasher.queue(f)
                claimed = False
            return claimed, span.cur, span.end

    def _record_decoded(self, span: Span, pos: int, n: int, queue_hash: bool) -> tuple[bool, int, int] | None:
        """``record`` for an item decoded into a file (a xorb range): the raw
        bytes count as received, the file bytes they made as on disk."""
        s = self.s
        x = cast("XorbItem", span.item)
        f = x.file
        with s.lock:
            if span.gen != x.gen or not x.current:
                return None
            span.cur = pos + n
            s.took(span, n)
            claimed = False
            added = 0
            for a, b in x.land():
                new, c = f.land(a, b)
                added += new
                claimed = claimed or c
            if added:
                s.done_bytes += added
                if s.maps.touched(f, added):
                    s.sup.notify()
            if span.cur >= span.end and self.xet is not None:
                self.xet.finished(x)
            if claimed and queue_hash:
                self.hasher.queue(f)
                claimed = False
            return claimed, span.cur, span.end

    def hash_claimed(self, item: Item) -> None:
        self.hasher.hash_claimed(cast(FileState, item.parent or item))

    def hash_behind(self) -> bool:
        return self.hasher.behind

    def note_ttfb(self, seconds: float) -> None:
        self.s.ctl.sizer.note_ttfb(seconds)

    # -- answers ----------------------------------------------------------------------------
    def answered(self, item: Item) -> None:
        if not item.answered:
            with self.s.lock:
                item.answered = True
                self.s.work.notify_all()  # threads and idle loops waiting for work

    def redirected(self, span: Span, url: str, direct: bool) -> None:
        item = span.item
        with self.s.lock:
            item.direct_url = url  # a signed CDN URL: the next spans go straight there
            item.answered = True  # (together: no other loop may start one at the old URL)
            self.s.sched.drop(span)
            if not direct:
                self._make_slow(item)

    def restart(self, span: Span, no_ranges: bool) -> None:
        f = _file(span)
        with self.s.lock:
            self.s.done_bytes -= f.done.covered()
            f.restart(no_ranges)
            self.s.sched.restart(span)

    def to_threads(self, span: Span) -> None:
        with self.s.lock:
            self.s.sched.drop(span)
            self._make_slow(span.item)

    def no_splice(self, span: Span) -> None:
        s = self.s
        with s.lock:
            s.sched.drop(span)
            s.loop_on = False
            self._workers.splice_ok = False
            for f in s.files:
                if f.active:
                    self._make_slow(f)

    def abort(self, exc: BaseException) -> None:
        self.s.abort(exc)

    def failed(self, span: Span, exc: BaseException) -> None:
        s = self.s
        item = span.item
        with s.lock:
            s.sched.drop(span)
            # The home failing ends the run; bytes failing a check (a corrupt
            # xorb range) are fetched again like any transient failure.
            if (isinstance(exc, StoreError) and not isinstance(exc, IntegrityError)) or not isinstance(exc, QwenhomeError):
                if s.fatal is None:
                    s.fatal = exc
                s.wake_all()
                return
            if not span.current or not item.active:
                return
            if item.decoded and self.xet is not None:
                self.xet.failed(cast("XorbItem", item), span, exc)
                return
            s.sched.requeue(item)
            if span.cand != item.cand:
                return  # from a source the item has left: no verdict on the one it uses now
            if exc.transient:
                delay = retry_delay(item, span, exc, self.clock(), self._retries)
                if delay is not None:
                    s.emit(RETRY, item, message=f"{exc.code}: {exc.message}; retry in {delay:.1f}s")
                    return  # idle workers look again within 0.1 s; the back-off is longer
            s.move_on(_file(span), exc)
            s.work.notify()
