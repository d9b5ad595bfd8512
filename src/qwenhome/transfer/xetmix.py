"""A Xet file's two kinds of work, and how they share it.

A Xet file's bytes come through xorb ranges (planned piece by piece from
reconstructions) and, at the same time, through its plain candidates (the
resolve bridge, mirrors): the file item carves ranges of what no piece,
xorb range or local copy holds. Each kind claims work as it goes, front to
back, so neither runs far ahead of what it can fetch:

- a piece of the file is Xet's once a planner asks its reconstruction
  (:meth:`Sharing.claim` trims it to what the plain side has not taken
  meanwhile); until then its bytes are the plain side's to carve too;
- Xet claims a new piece only while few of its xorb ranges wait for a
  connection (:meth:`Sharing.may_claim`);
- each kind has a share of the connections (:meth:`Sharing.quota`), and a
  connection freed by one kind goes back to it: the kind whose connections
  move bytes faster comes back for work more often and carries more of the
  file (a xorb host capped per connection beside an uncapped bridge, or the
  reverse);
- the shares follow the bytes each kind's connections move
  (:meth:`Sharing.observe`): the plain side gets half or most connections
  only while its connections are clearly faster, else one, to keep
  measuring.
  Xet is preferred at equal speed: its bytes teach the file's recipe its
  chunk lengths (a later revision reuses chunks by them; plain bytes must
  be chunked again for that, some 6 CPU s per GB) and may be compressed.

A file stops sharing when either side gives up on it (Xet's hosts are away,
or its plain candidates refuse it, as the Hub's bridge does very large
files): the other then takes everything that is not on disk.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from .files import FileState
from .partmap import Intervals
from .scheduler import Scheduler
from .sizing import MiB
from .state import State
from .work import Status
from .xetjob import XetJob
from .xorbs import XorbItem, spans_of

log = logging.getLogger(__name__)

SHARES = ("plain", "xorb")  # (the shares of files.FileState and xorbs.XorbItem)
WINDOW = 0.3  # seconds of transfer the shares are judged on
# The plain side's part of the connections, by how much faster than a xorb
# connection a plain one moves bytes: (at least this ratio, part).
# (0: one connection, to keep measuring.)
PLAIN_PARTS = ((4.0, 7 / 8), (2.0, 1 / 2), (0.0, 0.0))
PLAIN_START = 0.0  # before the first judgement (a pull of a few hundred MB lasts about one)
# A piece Xet claims of a sharing file is about this many seconds of a xorb
# connection (at least PIECE_FIRST, the size until a rate is measured): what
# it claims, the plain side cannot take, and a xorb range is never split.
PIECE_TIME, PIECE_FIRST = 1.0, 4 * MiB


@dataclass(eq=False)
class Piece:
    """File bytes ``[start, end)`` whose reconstruction is to be asked."""

    start: int
    end: int
    replans: int = 0  # fresh URLs its bytes were refused in a row, for the items it makes
    ready_at: float = 0.0
    asked: bool = False  # a planner took it: Xet's (a sharing file's other pieces are anyone's)


@dataclass(eq=False)
class XetFile:
    f: FileState
    job: XetJob
    items: set[XorbItem] = field(default_factory=set)
    planning: list[Piece] = field(default_factory=list)  # pieces asked or to ask
    copying: list[tuple[int, int]] = field(default_factory=list)  # local copies not made yet
    gave_up: bool = False  # Xet serves it no more
    plain_off: bool = False  # its plain candidates serve it no more
    rounds: int = 0  # reconstructions that left bytes unfilled, in a row
    failures: int = 0  # failed reconstructions, in a row

    def held(self, under_way: bool = True) -> list[tuple[int, int]]:
        """What its Xet side holds: the file item's carve skips it (without
        ``under_way``: but for the xorb ranges a connection has started)."""
        mixed = self.f.mixed
        items = self.items if under_way else [x for x in self.items if not x.started]
        return (spans_of(items) + [(p.start, p.end) for p in self.planning if p.asked or not mixed]
                + self.copying)

    def carve_skips(self) -> list[tuple[int, int]]:
        """What the file item's carve skips: what Xet holds, everything once
        the plain side is off, nothing once Xet gave up (but local copies)."""
        if self.plain_off:
            return [(0, self.f.size)]
        return [] if self.gave_up and not self.copying else self.held()

    def skips(self, overtake: bool) -> None:
        """Tell the file item what its carve skips (under the lock). With
        ``overtake`` (its plain side is judged faster), once nothing else is
        left, its carve may take the bytes of xorb ranges under way too: the
        plain side fetches them beside a slow xorb connection, and the
        first to land counts (the file's write gate keeps the other's off
        bytes hashed already). Pieces asked, local copies and xorb ranges
        not started stay Xet's."""
        f = self.f
        f.held_ranges = self.carve_skips()
        overtaking = overtake and f.mixed and not self.plain_off and not self.gave_up
        f.overtake_ranges = self.held(under_way=False) if overtaking else None

    def stop_plain(self) -> list[tuple[int, int]]:
        """Its plain candidates serve it no more: every piece is Xet's; the
        bytes nothing holds are returned, for Xet to plan."""
        self.plain_off = True
        self.f.mixed = False
        for p in self.planning:
            p.asked = True
        return gaps(self.f, 0, self.f.size, self.held())

    def drop(self, sched: Scheduler) -> None:
        """Xet's work on it ends: its xorb ranges and pieces are forgotten."""
        self.cancel(list(self.items), sched)
        self.planning.clear()

    def release(self, sched: Scheduler) -> bool:
        """Its xorb ranges no connection has started go back to anyone
        (True: some did); what no one takes, Xet plans again when idle."""
        idle = [x for x in self.items if not x.started]
        self.cancel(idle, sched)
        return bool(idle)

    def cancel(self, items: list[XorbItem], sched: Scheduler) -> None:
        for x in items:
            x.status = Status.FAILED
            sched.cancel(x)
            self.items.discard(x)

    def waiting(self) -> int:
        """Xorb ranges queued but not started, and reconstructions under way."""
        return sum(1 for x in self.items if not x.started) + sum(1 for p in self.planning if p.asked)


def gaps(f: FileState, start: int, end: int, minus: Iterable[tuple[int, int]] = ()) -> list[tuple[int, int]]:
    """File bytes of ``[start, end)`` neither on disk, nor being fetched, nor in ``minus``."""
    return f.busy(minus).gaps(start, end)


def interleave(pieces: deque[tuple[XetFile, Piece]], lanes: int) -> deque[tuple[XetFile, Piece]]:
    """The pieces of ``lanes`` files at a time, in turn, each file's in order."""
    queues: dict[XetFile, deque[tuple[XetFile, Piece]]] = {}
    for xf, piece in pieces:
        queues.setdefault(xf, deque()).append((xf, piece))
    waiting = deque(queues.values())
    active = [waiting.popleft() for _ in range(min(lanes, len(waiting)))]
    out: deque[tuple[XetFile, Piece]] = deque()
    while active:
        for q in list(active):
            out.append(q.popleft())
            if not q:
                active.remove(q)
                if waiting:
                    active.append(waiting.popleft())
    return out


class Sharing:
    """The sharing files' policy (every method under the run's lock)."""

    def __init__(self, state: State, files: dict[FileState, XetFile]) -> None:
        self.s = state
        self.files = files
        self.plain_part = PLAIN_START
        self._began = -1.0  # when the window began
        self._secs0 = dict.fromkeys(SHARES, 0.0)  # the share's connection-seconds when the window began
        self._bytes0 = dict.fromkeys(SHARES, 0)  # the share's bytes when the window began
        self.xorb_rate = 0.0  # bytes/s of a xorb connection, as last judged
        self.judged = False  # the shares were judged once

    def quota(self, share: str) -> int | None:
        """The spans a share may have under way: its part of the connections."""
        if share not in SHARES:
            return None
        target = self.s.ctl.target
        plain = min(target - 1, max(1, round(target * self.plain_part)))
        return plain if share == "plain" else max(1, target - plain)

    def observe(self, now: float) -> None:
        """The supervisor's tick: xorb ranges the plain side has overtaken
        end; once a window has enough of both shares' connection-seconds,
        the plain part is judged again."""
        self._end_overtaken()
        secs = {k: self.s.sched.share_seconds(k, now) for k in SHARES}
        if self._began < 0:
            self._began, self._secs0 = now, secs
            return
        got = self.s.share_bytes
        conn_s = {k: secs[k] - self._secs0[k] for k in SHARES}
        moved = {k: got.get(k, 0) - self._bytes0[k] for k in SHARES}
        # (a window long, and one connection each for a window at least, or
        # a side fast enough to bring a few MiB in less: the plain side can
        # fetch all it may before a slow xorb host's ranges are a window in)
        if now - self._began < WINDOW or not all(
                conn_s[k] >= WINDOW or (conn_s[k] > 0 and moved[k] >= PIECE_FIRST) for k in SHARES):
            return
        self._began, self._secs0 = now, secs
        rate = {k: moved[k] / conn_s[k] for k in SHARES}
        self.xorb_rate = rate["xorb"]
        overtook = self.overtakes()
        self.judged = True
        ratio = rate["plain"] / max(1.0, rate["xorb"])
        self.plain_part = next(part for least, part in PLAIN_PARTS if ratio >= least)
        log.debug("shares: plain %.1f MB/s, xorb %.1f MB/s per connection; plain part %.3f of %d",
                  rate["plain"] / 1e6, rate["xorb"] / 1e6, self.plain_part, self.s.ctl.target)
        self._bytes0 = {k: got.get(k, 0) for k in SHARES}
        faster = self.plain_part > PLAIN_PARTS[-1][1]
        if faster or overtook:
            self._judged(release=faster)

    def _end_overtaken(self) -> None:
        """Xorb ranges whose bytes the plain side has overtaken (on disk or
        under way from it) are cancelled, their connections closed: the
        rest of their bytes would come twice. (Should its ranges fail, the
        plain side carves them again, or hands them back to Xet.)"""
        for xf in self.files.values():
            if xf.f.overtake_ranges is None or not xf.f.active:
                continue
            held = xf.f.busy()
            done = [x for x in xf.items if x.started and held.covers(*x.extent)]
            if done:
                xf.cancel(done, self.s.sched)
                xf.skips(self.overtakes())

    def _judged(self, release: bool) -> None:
        """The plain side is judged faster (``release``), or no longer: what
        Xet claimed and has not started is anyone's again (claimed while Xet
        had most connections, it would wait for the few it has now), and the
        plain side may overtake xorb ranges under way, or no longer."""
        sched = self.s.sched
        for xf in self.files.values():
            if xf.f.mixed and xf.f.active:
                if release:
                    xf.release(sched)
                xf.skips(self.overtakes())
                sched.requeue(xf.f)
        self.s.work.notify_all()

    def overtakes(self) -> bool:
        """The plain side may fetch what xorb ranges under way fetch (when
        it has nothing else): its connections are judged clearly faster."""
        return self.judged and self.plain_part > PLAIN_PARTS[-1][1]

    def may_claim(self) -> bool:
        """Xet may claim another piece of a sharing file: its xorb ranges do
        not wait for connections (what it claims, the plain side cannot take)."""
        limit = max(2, (self.quota("xorb") or 0) // 2)
        return sum(xf.waiting() for xf in self.files.values() if xf.f.mixed) < limit

    def claim(self, xf: XetFile, piece: Piece, queue: deque[tuple[XetFile, Piece]]) -> bool:
        """Xet takes ``piece`` of a sharing file: trimmed to its first part
        the plain side has not taken, and to about a second of a xorb
        connection; its other parts go first in ``queue``. False: nothing
        of it is left."""
        left = gaps(xf.f, piece.start, piece.end, xf.held())
        if not left:
            xf.planning.remove(piece)
            return False
        cap = self.piece_cap()
        a, b = left[0]
        if cap and b - a > cap:
            # (at the whole file's answer's last cut within the cap, when the
            # piece starts on one: its URLs serve it without asking)
            whole = xf.job.slicer(piece.replans)
            cut = whole.cut_within(a, a + cap) if whole is not None and whole.is_cut(a) else None
            at = cut or a + cap
            # (and the rest from the next cut on, for the same reason)
            nxt = whole.cut_at_or_after(at, b) if whole is not None else b
            left[0:1] = [(a, at), (at, nxt), (nxt, b)] if at < nxt < b else [(a, at), (at, b)]
        piece.start, piece.end = left[0]
        more = [Piece(a, b, piece.replans) for a, b in left[1:]]
        xf.planning.extend(more)
        queue.extendleft((xf, p) for p in reversed(more))
        return True

    def piece_cap(self) -> int:
        """The most Xet claims of a sharing file at once (0: its pieces as
        planned): a second of a xorb connection while the plain side is
        judged faster, PIECE_FIRST until judged; at equal speed Xet keeps
        its usual pieces (each piece costs a reconstruction, and the chunk at
        its start is fetched by both pieces it straddles)."""
        if not self.judged:
            return PIECE_FIRST
        if self.plain_part <= PLAIN_PARTS[-1][1]:
            return 0
        return max(PIECE_FIRST, int(self.xorb_rate * PIECE_TIME))

    @staticmethod
    def skip(xf: XetFile) -> Intervals | None:
        """File bytes a xorb range of a sharing file does not write: on disk,
        or under way from the plain side (None: the file does not share)."""
        return xf.f.busy() if xf.f.mixed else None
