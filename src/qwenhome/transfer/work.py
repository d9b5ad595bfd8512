"""What the scheduler hands out: work items and the spans cut from them.

An :class:`Item` is a run of bytes to fetch from one of its candidate URLs,
with a :class:`Destination` that says where they go (a file today; a range of
a remote object decoded elsewhere could be another). The scheduler cuts an
item into :class:`Span` s, each the byte range one request fetches. The
fields below are the scheduler's and the loops' shared vocabulary; they are
changed under the run's lock.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import ClassVar

from ..config import Source
from ..errors import DiskFullError, QwenhomeError
from ..net.response import discard_pipe, drain_pipe
from ..store.cache import translate_os_error
from .gate import REFUSED, WriteGate
from .partmap import Intervals

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """One place an item can be fetched from."""

    source: Source
    url: str


class Status(Enum):
    ACTIVE = "active"
    VERIFIED = "verified"
    FAILED = "failed"


@dataclass(eq=False)
class Destination:
    """Where an item's bytes go: its byte ``pos`` lands at ``offset + pos`` of
    the file at ``path``, opened on first use and closed when the item is
    finished (bounded open files)."""

    # The loops may splice a body into ``fd`` (a sink that decodes what it is
    # given says False: its bytes go through a buffer and :meth:`write`).
    spliceable: ClassVar[bool] = True

    path: Path
    offset: int = 0
    fd: int = -1
    gate: WriteGate = field(default_factory=WriteGate)  # (see gate.py: writes go through put/drain)

    def open(self, size: int, fresh: bool) -> None:
        """Open the file; when ``fresh`` (nothing of it on disk), pre-size it.
        Not again once closed: a late span's writes are refused anyway."""
        if self.fd >= 0 or self.gate.sealed:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if fresh:
                # Emptied only when something is there: on ext4 a truncation
                # to zero marks the file to be flushed on close (the
                # "replace via truncate" guard), which stalls the install
                # and every journal user for tens of ms on a big file.
                if os.fstat(fd).st_size:
                    os.ftruncate(fd, 0)
                os.ftruncate(fd, self.offset + size)
        except OSError as exc:
            raise translate_os_error(exc, self.path) from exc
        self.fd = fd

    def close(self) -> None:
        """Close the file once no write is under way; none lands after."""
        self.gate.seal()
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError as exc:  # nothing was buffered: the bytes are written already
                log.debug("closing %s: %s", self.path, exc)
            self.fd = -1

    def put(self, mv: memoryview, n: int, pos: int, gen: int) -> bool:
        """:meth:`write` for the file's generation ``gen``, through the gate:
        False (nothing written) when the bytes are no longer wanted there
        (no bytes are always wanted)."""
        if self.gate.enter(gen, pos, pos + n, whole=True) == REFUSED:
            return n == 0
        try:
            self.write(mv, n, pos)
        finally:
            self.gate.leave(pos, pos + n)
        return True

    def drain(self, pipe_r: int, n: int, pos: int, gen: int) -> bool:
        """The ``n`` bytes waiting in a pipe go to byte ``pos`` (splice's
        second half), through the gate; when refused, they are read out of
        the pipe and dropped, and the answer is False."""
        if self.gate.enter(gen, pos, pos + n, whole=True) == REFUSED:
            discard_pipe(pipe_r, n)
            return n == 0
        try:
            drain_pipe(pipe_r, self.fd, self.offset + pos, n)
        finally:
            self.gate.leave(pos, pos + n)
        return True

    def write(self, mv: memoryview, n: int, pos: int) -> None:
        """``pwrite`` all of ``mv[:n]`` at the item's byte ``pos``; a short
        write means the disk is filling up (callers go through :meth:`put`)."""
        written = 0
        try:
            while written < n:
                w = os.pwrite(self.fd, mv[written:n], self.offset + pos + written)
                if w <= 0:
                    raise DiskFullError(f"no space left writing {self.path}")
                written += w
        except OSError as exc:
            raise translate_os_error(exc, self.path) from exc


@dataclass(eq=False, kw_only=True)
class Item:
    """Bytes to fetch: ``size`` of them from ``candidates[cand]`` into ``dest``."""

    # Its bytes are decoded into another item (a file) rather than being its
    # own: the run records and hashes them there (see the Xet items).
    decoded: ClassVar[bool] = False

    name: str  # what messages call it (a file's path in its repository)
    size: int
    candidates: list[Candidate]
    dest: Destination
    parent: Item | None = None  # the item its bytes become part of (a xorb range's file): progress names that
    done: Intervals = field(default_factory=Intervals)  # on disk
    validator: str | None = None  # the source's strong ETag: If-Range keeps ranges of one content
    cand: int = 0
    inflight: list[Span] = field(default_factory=list)
    direct_url: str | None = None  # a redirect's target (a signed CDN URL): later spans go straight there
    failures: int = 0  # rounds of failed spans in a row (see the run's failure verdicts)
    ready_at: float = 0.0  # backing off until then
    gen: int = 0  # bumped when its bytes are thrown away: older spans are stale
    no_ranges: bool = False  # the source ignores ranges: one span, the whole item
    # Byte 0 of the item is byte ``base`` of what its URL serves; ``whole``:
    # the item is all of it (a 206's total is its size, a 200 may carry it).
    base: int = 0
    whole: bool = True
    splittable: bool = True  # False: one span at a time, from the first byte not on disk to the end
    status: Status = Status.ACTIVE
    error: QwenhomeError | None = None
    started: bool = False
    queued: bool = True  # in the scheduler's queue of items with bytes to hand out
    slow: bool = False  # served by the worker threads (TLS the loop cannot make, proxy, odd answer)
    # The first answer came (or the first request failed): until then one span
    # at a time, so a resolve that redirects is asked once, not per connection.
    answered: bool = False

    @property
    def active(self) -> bool:
        return self.status is Status.ACTIVE

    @property
    def one_span(self) -> bool:
        """One span at a time, never split or stolen from: the source ignores
        ranges, or the bytes must come in order (a run of xorb chunks)."""
        return self.no_ranges or not self.splittable

    def busy(self, also: Iterable[tuple[int, int]] = ()) -> Intervals:
        """Its bytes on disk or under way, and ``also`` (a copy: the caller may add to it)."""
        out = Intervals(list(self.done.starts), list(self.done.ends))
        for s in self.inflight:
            out.add(s.start, s.end)
        for a, b in also:
            out.add(a, b)
        return out

    def held(self) -> Iterable[tuple[int, int]]:
        """Ranges ``[start, end)`` of the item that other items are fetching
        (a file's ranges its Xet items fill): not carved from it."""
        return ()

    def overtake(self) -> Iterable[tuple[int, int]] | None:
        """When :meth:`held` leaves nothing to carve: the ranges still not
        carved, the others being fetched by this item too (None: nothing)."""
        return None

    def share(self) -> str:
        """The share of the connections its spans count against ("" for
        none): a Xet file's plain spans and its xorb ranges each get theirs
        while both kinds fetch the file (see the scheduler's quota)."""
        return ""

    def candidate(self) -> Candidate:
        return self.candidates[self.cand]

    def url(self) -> str:
        return self.direct_url or self.candidates[self.cand].url

    def left(self) -> int:
        """Bytes not yet on disk."""
        return self.size - self.done.covered()

    def open(self) -> None:
        """Open the destination (pre-sized when nothing is on disk yet)."""
        self.dest.open(self.size, fresh=not self.done.starts)

    def send(self, span: Span) -> tuple[Candidate, str]:
        """The candidate and URL ``span``'s request goes to now (a failover
        may have come since it was cut); the span remembers which."""
        span.cand = self.cand
        return self.candidates[self.cand], self.url()


@dataclass(eq=False)
class Span:
    """``[start, end)`` of ``item``, fetched up to ``cur``; stale once the
    item's ``gen`` moved on."""

    item: Item
    start: int
    cur: int
    end: int
    gen: int
    t0: float  # when it was cut
    tries: int = 0  # its item's failure count when it was cut: one blip fails many spans
    cand: int = 0  # the candidate its request went to (set when it is sent)
    share: str = ""  # its item's share when it was cut (the scheduler's count)

    @property
    def current(self) -> bool:
        return self.gen == self.item.gen
