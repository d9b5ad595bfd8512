"""What range goes next: carving items into spans, splitting a span that
holds an item's prefix back, stealing from an outlier at the end of a run.

Items wait in two queues, one per path (the event loops', the worker
threads'), largest first; every other span goes to the smallest item waiting.
An item is carved on demand, lowest offset first, in spans as long as the
range sizer says. Pure code: callers hold the run's lock and pass the clock's
reading; the cost of a step does not grow with the number of items.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .sizing import KiB, MiB, RangeSizer, aligned
from .work import Item, Span

# A span younger than this is not split to free an item's prefix: its first
# bytes may not have come yet.
BOOST_AGE = 0.2
# The end-game judges a connection's speed once its span is this old ...
STEAL_MEASURE_AGE = 0.3
# ... and splits only spans at least this old and slower than this fraction of
# the typical one (an outlier): uniform slowness (a per-connection cap, a busy
# CPU) is left alone, since a split costs the victim its connection and the
# bytes already in its socket buffers.
STEAL_AGE = 1.0
STEAL_SLOW = 0.3


@dataclass(frozen=True)
class Splits:
    """When a span under way is cut in two."""

    steal_min: int = 2 * MiB  # a span with less than twice this left is not split
    # Bytes received past an item's written prefix beyond which the span that
    # holds the prefix is split: the hash can only follow the prefix.
    hash_lag: int = 64 * MiB
    # At the end of a run a span holding a prefix is split only when its rest
    # takes longer than this many request round trips at its rate (a split
    # costs the new span one) and is at least twice this many bytes.
    end_trips: float = 3.0
    end_min: int = 256 * KiB


class Scheduler:
    """The queues of items with bytes to hand out and the spans under way.

    ``connections()`` is the connection target and ``left()`` the bytes of
    the run not yet on disk (they size the end of a run); ``on_start(item)``
    runs when an item's first span is cut; ``wake()`` when an item is queued
    again (a waiting thread may take it)."""

    def __init__(self, sizer: RangeSizer, splits: Splits = Splits(), *,
                 connections: Callable[[], int], left: Callable[[], int],
                 on_start: Callable[[Item], None] = lambda _i: None,
                 wake: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sizer = sizer
        self.splits = splits
        self._connections = connections
        self._left = left
        self._on_start = on_start
        self._wake = wake
        self._clock = clock
        self.fast: deque[Item] = deque()  # items the event loops serve
        self.slow: deque[Item] = deque()  # items the worker threads serve
        self.inflight: set[Span] = set()
        # A share's spans under way, and how many it may have (None: no bound):
        # a Xet file's plain spans and its xorb ranges share the connections.
        self.shares: dict[str, int] = {}
        self._share_secs: dict[str, float] = {}  # connection-seconds of a share's ended spans
        self.quota: Callable[[str], int | None] = lambda _share: None
        self._small_turn = False  # _carve_next alternates between the ends of a queue

    def add(self, items: Iterable[Item]) -> None:
        """Queue ``items``, largest first: big items spread over many
        connections early and the small ones fill the gaps at the end."""
        for item in sorted(items, key=Item.left, reverse=True):
            item.queued = True
            (self.slow if item.slow else self.fast).append(item)

    def next_span(self, now: float, slow: bool) -> Span | None:
        """The next span for a path: a stuck prefix first, then new bytes,
        then the end-game."""
        queue = self.slow if slow else self.fast
        return self._boost_prefix(now, slow) or self._carve_next(now, queue) or self._steal(now, slow)

    def full(self, item: Item) -> bool:
        """``item``'s share has all the spans its quota allows."""
        share = item.share()
        if not share:
            return False
        q = self.quota(share)
        return q is not None and self.shares.get(share, 0) >= q

    def _add_span(self, span: Span) -> None:
        span.share = span.item.share()
        span.item.inflight.append(span)
        self.inflight.add(span)
        if span.share:
            self.shares[span.share] = self.shares.get(span.share, 0) + 1

    def _forget(self, span: Span) -> None:
        if span in self.inflight:
            self.inflight.discard(span)
            if span.share:
                self.shares[span.share] -= 1
                secs = self._share_secs.get(span.share, 0.0)
                self._share_secs[span.share] = secs + max(0.0, self._clock() - span.t0)

    def share_seconds(self, share: str, now: float) -> float:
        """The connection-seconds ``share``'s spans took so far, those under
        way up to ``now`` (exact: a side whose spans end between two looks
        at those under way is measured all the same)."""
        return self._share_secs.get(share, 0.0) + sum(now - s.t0 for s in self.inflight if s.share == share)

    def requeue(self, item: Item) -> None:
        """``item`` has bytes to hand out again."""
        if not item.queued and item.active:
            item.queued = True
            # Unfinished items first: keeps their hashed prefix moving.
            (self.slow if item.slow else self.fast).appendleft(item)
            self._wake()

    def drop(self, span: Span) -> None:
        """``span`` ended (done, failed or cut short); what it left is handed out again."""
        item = span.item
        if span in item.inflight:
            item.inflight.remove(span)
        self._forget(span)
        if span.current and span.cur < span.end:
            self.requeue(item)

    def cancel(self, item: Item) -> None:
        """Forget every span of ``item`` (its bytes are void, or it is finished)."""
        for span in item.inflight:
            span.gen = -1
            self._forget(span)
        item.inflight.clear()

    def restart(self, span: Span) -> None:
        """``item`` starts again from byte 0 on ``span`` alone (an answer gave
        the whole item): the span now covers it all."""
        item = span.item
        self.cancel(item)
        self._add_span(span)
        span.start = span.cur = 0
        span.end = item.size
        span.gen = item.gen

    def make_slow(self, item: Item) -> bool:
        """Hand ``item`` to the worker threads for the rest of the run; False
        when they have it already."""
        if item.slow:
            return False
        item.slow = True
        if item.queued:
            try:
                self.fast.remove(item)
            except ValueError:
                pass  # taken off the queue meanwhile: requeue puts it on the threads' one
            item.queued = False
        self.requeue(item)
        return True

    # -- carving --------------------------------------------------------------------
    def _carve_next(self, now: float, queue: deque[Item]) -> Span | None:
        """The next span from ``queue`` (largest items first). Every other
        span goes to the smallest item waiting: the large items keep most
        connections (their spans last longer), while the small ones, each
        mostly a round trip, are asked for during the transfer instead of all
        at its end, where their latency would add up."""
        self._small_turn = not self._small_turn
        if self._small_turn and len(queue) > 1:
            span = self._carve_end(now, queue, smallest=True)
            if span is not None:
                return span
        return self._carve_end(now, queue, smallest=False)

    def _carve_end(self, now: float, queue: deque[Item], smallest: bool) -> Span | None:
        take = queue.pop if smallest else queue.popleft
        skipped: list[Item] = []
        span: Span | None = None
        while queue:
            item = queue[-1] if smallest else queue[0]
            if not item.active or item.slow != (queue is self.slow):
                take()
                item.queued = False
                self.requeue(item)  # an item the loop handed over: into the other queue
                continue
            if item.ready_at > now or (item.inflight and not item.answered) or self.full(item):
                skipped.append(take())
                continue
            span = self._carve(item, now)
            if span is not None:
                break
            take()
            item.queued = False
        put = queue.append if smallest else queue.appendleft
        for item in reversed(skipped):
            put(item)
        return span

    def _carve(self, item: Item, now: float) -> Span | None:
        size = item.size
        if size == 0 or (item.one_span and item.inflight):
            return None
        gap = item.busy(item.held()).first_gap(0, size)
        if gap is None:
            # (nothing else: the ranges another item fetches that this one may fetch too)
            overtake = item.overtake()
            gap = item.busy(overtake).first_gap(0, size) if overtake is not None else None
            if gap is None:
                return None
        start, end = gap
        if not item.one_span:
            chunk = self.sizer.next_size(self._left(), self._connections())
            end = min(end, start + chunk)
            if 0 < size - end < chunk // 4 and gap[1] == size:
                end = size  # no tiny tail span
        item.open()
        span = Span(item, start, start, end, item.gen, now, item.failures)
        self._add_span(span)
        if not item.started:
            item.started = True
            self._on_start(item)
        return span

    # -- splitting ------------------------------------------------------------------
    def _boost_prefix(self, now: float, slow: bool) -> Span | None:
        """Split the span that holds an item's written prefix when much was
        received beyond it: the hash can only follow the prefix, so while one
        slow span holds it, the backlog grows into a hashing tail after the
        last byte. Asked before new bytes are handed out."""
        best: Span | None = None
        for s in self.inflight:
            item = s.item
            if (item.slow != slow or item.one_span or s.cur != item.done.prefix() or now - s.t0 < BOOST_AGE
                    or self.full(item)
                    or s.end - s.cur < 2 * self.splits.steal_min
                    or item.done.covered() - s.cur < self.splits.hash_lag):
                continue
            if best is None or s.end - s.cur > best.end - best.cur:
                best = s
        return None if best is None else self._split(best, now)

    def _split(self, victim: Span, now: float) -> Span | None:
        """Give the second half of ``victim``'s remaining bytes to a new span."""
        mid = aligned(victim.cur + (victim.end - victim.cur) // 2)
        if mid <= victim.cur:
            return None
        new = Span(victim.item, mid, mid, victim.end, victim.gen, now, victim.tries)
        victim.end = mid
        self._add_span(new)
        return new

    def _steal(self, now: float, slow: bool) -> Span | None:
        """End-game: split the span of an outlier connection, else the one
        holding a prefix the hash waits on."""
        return self._outlier(now, slow) or self._end_prefix(now, slow)

    def _end_prefix(self, now: float, slow: bool) -> Span | None:
        """End-game, no outlier: when more was received past an item's
        written prefix than the run has left to receive, the span holding
        that prefix decides when the hash ends (the hash can only follow the
        prefix, and the bytes past it land in the meantime): its second half
        goes to the idle connection. Every connection at the per-connection
        cap of a capped link, the prefix's span otherwise lands with the last
        wave and the hash starts on 50-60 MB after the last byte."""
        left = self._left()
        best: Span | None = None
        most = self.splits.end_trips * max(self.sizer.ttfb, 0.001)
        for s in self.inflight:
            item = s.item
            if (item.slow != slow or item.one_span or s.cur != item.done.prefix() or now - s.t0 < BOOST_AGE
                    or s.end - s.cur < 2 * self.splits.end_min or item.done.covered() - s.cur <= left):
                continue
            rest = (s.end - s.cur) * (now - s.t0) / max(1, s.cur - s.start)  # seconds at its rate
            if rest > most:
                best, most = s, rest
        return None if best is None else self._split(best, now)

    def _outlier(self, now: float, slow: bool) -> Span | None:
        """Split the span of an outlier connection (much slower than the
        others, or silent)."""
        speeds: list[float] = []
        for s in self.inflight:
            if s.item.slow != slow:
                continue
            elapsed = now - s.t0
            if elapsed > STEAL_MEASURE_AGE:
                speeds.append((s.cur - s.start) / elapsed)
        if not speeds:
            return None
        speeds.sort()
        typical = speeds[len(speeds) // 2]
        best: Span | None = None
        best_left = 0
        for s in self.inflight:
            left = s.end - s.cur
            if (left < 2 * self.splits.steal_min or left <= best_left or s.item.one_span
                    or s.item.slow != slow or self.full(s.item)):
                continue
            elapsed = now - s.t0
            if elapsed < STEAL_AGE:
                continue
            speed = (s.cur - s.start) / elapsed
            if speed > 0 and speed >= STEAL_SLOW * typical:
                continue
            best, best_left = s, left
        return None if best is None else self._split(best, now)

