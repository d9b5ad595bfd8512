"""Xet work items: a range of a xorb fetched over HTTP, whose chunks are
decoded as they arrive and written at their offsets in a file.

A :class:`XorbItem` is an :class:`~.work.Item` like any other for the
scheduler and the I/O paths: bytes ``[0, size)`` of a signed URL's range.
Its destination is a :class:`ChunkSink`, not a file: the bytes go through a
buffer (never spliced), each chunk's header is checked, its payload
decompressed, and the chunk written to every place of the file that uses it
(a chunk may appear in several terms). The run records those places in the
file's intervals, so the file's written prefix grows and its sha256 follows
it as for any other bytes.

A run of chunks must be read from a chunk header on: such an item is never
split, and a failed span is asked again from the first chunk not yet written
(the item's ``done`` is the raw prefix of whole chunks written and recorded).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from ..config import Source
from ..errors import DiskFullError
from ..store.cache import translate_os_error
from ..xet.compression import Scheme, bg4_regroup_into, decompress, lz4_decompress
from ..xet.errors import XetAnswerError, XetCorruptError
from ..xet.reconstruction import ReconstructionV2
from ..xet.xorb import HEADER_LEN, header_at
from .files import FileState
from .gate import REFUSED
from .partmap import Intervals
from .work import Candidate, Destination, Item


@dataclass(frozen=True)
class Placement:
    """Chunks ``[first, end)`` of the item's xorb make ``length`` bytes of the
    file from ``offset`` on (one term of a reconstruction)."""

    first: int
    end: int
    offset: int
    length: int


@dataclass(frozen=True)
class Plan:
    """One xorb range to fetch: ``url`` with bytes ``[start, end]`` of xorb
    ``xorb``, holding chunks ``[first, stop)``, written at ``placements``."""

    xorb: str
    url: str
    start: int
    end: int  # inclusive, as the reconstruction gives it
    first: int
    stop: int
    placements: tuple[Placement, ...]

    @property
    def size(self) -> int:
        return self.end - self.start + 1

    def file_range(self) -> tuple[int, int]:
        return (min(p.offset for p in self.placements), max(p.offset + p.length for p in self.placements))


def plan_items(answer: ReconstructionV2, start: int, size: int) -> list[Plan]:
    """The xorb ranges of a reconstruction answer for file bytes from
    ``start`` on (of a file of ``size`` bytes), with where each range's chunks
    go. Each range of a fetch entry is one item (one request, as the
    reference client fetches them); a term lies in one range."""
    first = start - answer.offset_into_first_range
    if start and answer.offset_into_first_range == 0 and sum(t.unpacked_length for t in answer.terms) == size:
        first = 0  # a server that answered the whole file, not the range asked
    per_xorb: dict[str, list[Placement]] = {}
    at = first
    for t in answer.terms:
        per_xorb.setdefault(t.hash, []).append(Placement(t.range.start, t.range.end, at, t.unpacked_length))
        at += t.unpacked_length
    if first < 0 or at > size:
        # Decoded chunks are written where the answer places them: never outside the file.
        raise XetAnswerError(f"a reconstruction of bytes from {start} places file bytes {first}-{at}, "
                             f"outside the file's {size}")
    plans: list[Plan] = []
    for xorb, fetches in answer.xorbs.items():
        placements = per_xorb.get(xorb, [])
        for fetch in fetches:
            for r in fetch.ranges:
                inside = tuple(p for p in placements if r.chunks.start <= p.first and p.end <= r.chunks.end)
                if inside:
                    plans.append(Plan(xorb, fetch.url, r.bytes.start, r.bytes.end, r.chunks.start, r.chunks.end,
                                      inside))
    covered = {(x, p) for x, ps in per_xorb.items() for p in ps}
    used = {(pl.xorb, p) for pl in plans for p in pl.placements}
    if covered - used:
        # A term split over two ranges (a server cutting long URLs): its
        # chunks cannot be placed until all are decoded; not supported.
        raise XetAnswerError("a reconstruction term spans two fetch ranges (or none)", code="xet-unsupported",
                             hint="the file's bytes come from its other sources (the resolve bridge, mirrors)")
    return plans


@dataclass
class _Cursor:
    """Where decoding stands: the raw offset of the next chunk header, that
    chunk's index in the xorb, and each placement's bytes written so far."""

    pos: int
    chunk: int
    acc: list[int]

    def copy(self) -> _Cursor:
        return _Cursor(self.pos, self.chunk, list(self.acc))


class ChunkSink(Destination):
    """Decodes a xorb range's bytes, fed in order from a chunk header, into a
    file. Only the thread serving the item's one span feeds it."""

    spliceable = False

    def __init__(self, file: FileState, plan: Plan, learned: dict[tuple[str, int], int]) -> None:
        super().__init__(file.dest.path)
        self.file = file
        # The file's generation when planned: its bytes are for that one (the
        # file's gate refuses others; a file fetched again voids its items).
        self.gen = file.gen
        self.plan = plan
        self.learned = learned  # (xorb, chunk) -> length, for the file's recipe
        self._carry = bytearray()
        self._cur = _Cursor(0, plan.first, [0] * len(plan.placements))
        self._committed = self._cur.copy()
        self._landed: list[tuple[int, int]] = []
        # File bytes not to write: on disk, or being fetched plainly, when the
        # item was queued (set once, before its first span; never changed).
        self.skip: Intervals | None = None

    # -- the item's span -----------------------------------------------------------------
    def open(self, size: int, fresh: bool) -> None:
        """A span starts at the first chunk not yet recorded: decoding starts
        there again (what was decoded past it is written again)."""
        self.file.open()
        self._carry.clear()
        self._cur = self._committed.copy()
        self._landed.clear()

    def close(self) -> None:
        pass  # the file's descriptor is the file's

    def commit(self) -> tuple[int, list[tuple[int, int]]]:
        """(raw bytes of whole chunks written so far, the file ranges written
        since the last commit), for the run to record (under its lock)."""
        self._committed = self._cur.copy()
        landed, self._landed = self._landed, []
        return self._cur.pos, landed

    # -- decoding ---------------------------------------------------------------------------
    def put(self, mv: memoryview, n: int, pos: int, gen: int) -> bool:
        """Decoding goes on whatever the file's gate says: later chunks may be
        wanted; each run of file bytes asks the gate itself (see _Writes)."""
        self.write(mv, n, pos)
        return True

    def write(self, mv: memoryview, n: int, pos: int) -> None:
        """``n`` bytes of ``mv`` at raw offset ``pos``: every chunk they
        complete is checked, decoded and written. Raises XetCorruptError."""
        cur = self._cur
        if pos != cur.pos + len(self._carry):
            raise XetCorruptError(f"xorb bytes out of order at {pos}")  # (a bug: spans come in order)
        view = mv[:n]
        if self._carry:
            # Only the chunk that straddles two reads is copied, never the reads.
            used = self._complete(view)
            view = view[used:]
        if not self._carry:
            used = self._decode(view)
            if used < len(view):
                self._carry += view[used:]
        if cur.pos + len(self._carry) == self.plan.size:
            self._check_end()

    def _complete(self, view: memoryview) -> int:
        """Add to the carried partial chunk what it lacks of ``view`` and
        decode it when whole; returns the bytes of ``view`` used."""
        carry = self._carry
        used = min(len(view), max(0, HEADER_LEN - len(carry)))
        carry += view[:used]
        if len(carry) < HEADER_LEN:
            return used
        need = HEADER_LEN + header_at(carry, 0)[0] - len(carry)
        more = min(need, len(view) - used)
        carry += view[used:used + more]
        if more == need:
            self._carry = bytearray()  # (a new one: views of the whole chunk may outlive the call)
            self._decode(memoryview(carry))
        return used + more

    def _decode(self, view: memoryview) -> int:
        """Decode the whole chunks at the start of ``view`` and write them,
        a run of file bytes per system call; returns the bytes used."""
        cur, plan = self._cur, self.plan
        off, total = 0, len(view)
        writes = _Writes(self.file.dest, self.gen, self._landed)
        arena = _ARENA
        try:
            while total - off >= HEADER_LEN:
                plen, scheme, length = header_at(view, off)
                end = off + HEADER_LEN + plen
                if end > total:
                    break
                if cur.chunk >= plan.stop:
                    raise XetCorruptError(f"xorb range holds more than its {plan.stop - plan.first} chunks")
                payload = view[off + HEADER_LEN:end]
                if scheme == Scheme.NONE:
                    data = payload
                elif scheme == Scheme.BG4_LZ4 and length <= ARENA // 4:
                    data = arena.regroup(lz4_decompress(payload, length), writes)
                else:
                    data = memoryview(decompress(payload, scheme, length))
                self._place(data, writes)
                off = end
        finally:
            writes.flush()  # (what was decoded before a corrupt chunk is on disk, as recorded)
            arena.used = 0
        cur.pos += off
        return off

    def _place(self, data: memoryview, writes: _Writes) -> None:
        """Write chunk ``cur.chunk`` wherever the file uses it."""
        cur = self._cur
        n = len(data)
        chunk, acc, skip = cur.chunk, cur.acc, self.skip
        for i, p in enumerate(self.plan.placements):
            if not p.first <= chunk < p.end:
                continue
            at = p.offset + acc[i]
            filled = acc[i] + n
            if filled > p.length or (chunk == p.end - 1 and filled != p.length):
                raise XetCorruptError(f"xorb {self.plan.xorb[:12]}… chunks {p.first}-{p.end} decode to "
                                      f"{'more than ' if filled > p.length else ''}{filled} bytes, "
                                      f"the reconstruction says {p.length}")
            acc[i] = filled  # (in place: a failed chunk is decoded again from the committed cursor, a copy)
            if skip is None:
                writes.add(at, data)
            else:
                for a, b in skip.gaps(at, at + n):
                    writes.add(a, data[a - at:b - at])
        self.learned[(self.plan.xorb, chunk)] = n
        cur.chunk = chunk + 1

    def _check_end(self) -> None:
        if self._carry or self._cur.chunk != self.plan.stop:
            raise XetCorruptError(f"xorb range of {self.plan.stop - self.plan.first} chunks ends after "
                                  f"{self._cur.chunk - self.plan.first}"
                                  + (f" and {len(self._carry)} more bytes" if self._carry else ""))


ARENA = 1 << 20  # bytes of a decoding thread's buffer for regrouped BG4 chunks (a worker thread each: bounded)


class _Arena(threading.local):
    """A decoding thread's buffer for BG4 chunks put back in order: reused
    once the runs holding them are written, it saves the zeroing and
    mapping of a new buffer a chunk (which halved the regroup's speed)."""

    def __init__(self) -> None:
        self.buf: bytearray | None = None
        self.view = memoryview(b"")
        self.used = 0

    def regroup(self, grouped: bytes, writes: _Writes) -> memoryview:
        """``grouped`` (a BG4 chunk's LZ4 content) in order, in the buffer;
        when it is full, the pending runs are written first."""
        n = len(grouped)
        if self.buf is None:
            self.buf = bytearray(ARENA)
            self.view = memoryview(self.buf)
        if self.used + n > ARENA:
            writes.flush()  # (the views of the buffer it held are written: it is free again)
            self.used = 0
        at = self.used
        bg4_regroup_into(grouped, self.buf, at)
        self.used = at + n
        return self.view[at:at + n]


_ARENA = _Arena()


class _Writes:
    """Decoded chunks gathered into runs of adjacent file bytes, each written
    by one ``pwritev`` (a chunk is some 64 KiB: a call each cost more than
    the copy), and the file ranges written, for the run to record."""

    MAX_BUFFERS = 512  # below any system's IOV_MAX
    MAX_BYTES = 8 << 20  # decoded bytes held before they are written

    def __init__(self, dest: Destination, gen: int, landed: list[tuple[int, int]]) -> None:
        self.dest, self.gen, self.landed = dest, gen, landed
        self.bufs: list[memoryview] = []
        self.start = self.end = 0

    def add(self, at: int, data: memoryview) -> None:
        if self.bufs and (at != self.end or len(self.bufs) >= self.MAX_BUFFERS
                          or self.end - self.start >= self.MAX_BYTES):
            self.flush()
        if not self.bufs:
            self.start = self.end = at
        self.bufs.append(data)
        self.end += len(data)

    def flush(self) -> None:
        """Write the run through the file's gate: what it refuses (hashed
        bytes, another generation, a sealed file) is dropped, not recorded."""
        if not self.bufs:
            return
        bufs, start, end, dest = self.bufs, self.start, self.end, self.dest
        self.bufs = []
        at = dest.gate.enter(self.gen, start, end, whole=False)
        if at == REFUSED:
            return
        try:
            _pwritev(dest.fd, _drop_front(bufs, at - start), dest.offset + at, dest.path)
        finally:
            dest.gate.leave(at, end)
        landed = self.landed
        if landed and landed[-1][1] == at:
            landed[-1] = (landed[-1][0], end)
        else:
            landed.append((at, end))


def _drop_front(bufs: list[memoryview], n: int) -> list[memoryview]:
    """``bufs`` without their first ``n`` bytes."""
    while bufs and n >= len(bufs[0]):
        n -= len(bufs[0])
        bufs = bufs[1:]
    return [bufs[0][n:], *bufs[1:]] if n else bufs


def _pwritev(fd: int, bufs: list[memoryview], at: int, path: Path) -> None:
    try:
        while bufs:
            w = os.pwritev(fd, bufs, at)
            if w <= 0:
                raise DiskFullError(f"no space left writing {path}")
            at += w
            bufs = _drop_front(bufs, w)  # a short write: the rest again
    except OSError as exc:
        raise translate_os_error(exc, path) from exc


@dataclass(eq=False, kw_only=True)
class XorbItem(Item):
    """A xorb range of one file's Xet plan (see the module docstring)."""

    decoded: ClassVar[bool] = True

    file: FileState
    plan: Plan
    sink: ChunkSink
    replans: int = 0  # fresh URLs asked for it, in a row, without a byte
    extent: tuple[int, int] = field(default=(0, 0))  # the file bytes its chunks fill

    @classmethod
    def of(cls, file: FileState, plan: Plan, source: Source, learned: dict[tuple[str, int], int],
           replans: int = 0) -> XorbItem:
        sink = ChunkSink(file, plan, learned)
        return cls(name=f"{file.name} (xorb {plan.xorb[:8]}, chunks {plan.first}-{plan.stop})", size=plan.size,
                   candidates=[Candidate(source, plan.url)], dest=sink, parent=file, base=plan.start, whole=False, splittable=False,
                   answered=True, file=file, plan=plan, sink=sink, replans=replans,
                   extent=plan.file_range())

    def share(self) -> str:
        return "xorb" if self.file.mixed else ""

    @property
    def current(self) -> bool:
        """Its file has not been fetched again since it was planned (under the lock)."""
        return self.sink.gen == self.file.gen

    def land(self) -> list[tuple[int, int]]:
        """Record what the sink decoded since the last call: the item's raw
        prefix grows; returns the file ranges written (under the lock)."""
        upto, landed = self.sink.commit()
        if upto:
            self.done.add(0, upto)
        return landed


def spans_of(items: Iterable[XorbItem]) -> list[tuple[int, int]]:
    """The file ranges the active ``items`` fill, for the file's carve."""
    return [x.extent for x in items if x.active]
