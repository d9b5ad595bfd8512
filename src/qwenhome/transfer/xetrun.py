"""The Xet side of a run: which bytes of a file come through xorbs, local
copies of chunks the home holds, and the verdicts on Xet failures.

A Xet file's bytes come from three places, and its part map records what is
on disk whichever way it came:

- **local chunks** (:class:`~.xetjob.Copy`): ranges another blob of the home
  holds, copied by ``copy_file_range`` (a reflink where the filesystem has
  one) in a thread of their own;
- **xorb ranges** (:class:`~.xorbs.XorbItem`): the rest is cut into pieces;
  a planner thread asks the reconstruction of each piece (fresh signed URLs)
  and queues its xorb ranges as work items;
- **the file's own candidates** (the resolve bridge, mirrors, ModelScope):
  the file item carves what its Xet side does not hold
  (:meth:`~.files.FileState.held`), beside the xorb ranges, each kind with
  its share of the connections (see :mod:`.xetmix`); when Xet gives up on
  a file, its remaining bytes go there at once, keeping what is on disk,
  and when they refuse it, Xet takes the rest.

Xet gives up on a file when its hosts do not resolve or connect (at once,
for every file of the pull), when it fails ``max_retries`` rounds in a row,
or when fresh URLs are refused again. Methods marked "under the lock" expect
the caller to hold the run's lock.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

from ..errors import AuthError, ConnectError, IntegrityError, QwenhomeError, RemoteError
from ..progress import RETRY, SOURCE
from ..xet.slicing import Slicer
from .failover import Retries, retry_delay
from .files import FileState
from .hasher import Hasher
from .localcopy import Copier
from .sizing import MiB
from .state import State
from .work import Span, Status
from .xetjob import Copy
from .xetmix import Piece, Sharing, XetFile, gaps, interleave
from .xorbs import Plan, XorbItem, plan_items, spans_of

log = logging.getLogger(__name__)

PLANNERS = 16  # threads asking reconstructions: each waits a round trip (and the CAS); 16 x 4 MiB (the pieces before the first judgement) at 200 ms is 330 MB/s
# File bytes per reconstruction asked: enough xorb ranges for the connections
# a pull runs (about 64 pieces of what is to fetch), not a request per chunk.
PIECE_MIN, PIECE_MAX, PIECES = 8 * MiB, 64 * MiB, 64
LOOKAHEAD = 32  # xorb ranges queued beyond the connection target before more are planned
MAX_REPLANS = 3  # fresh URLs refused again, in a row: Xet gives up on the file
MAX_ROUNDS = 3  # reconstructions that left bytes unfilled, in a row
# Files whose pieces are fetched side by side, front to back: each file's
# sha256 follows its written prefix, and the engine's two hash threads hash
# two files at once (file after file left the last one's hash for the end).
LANES = 2


def _status(exc: QwenhomeError) -> int:
    status = exc.context.get("status")
    return status if isinstance(status, int) else 0


def unreachable(exc: BaseException) -> bool:
    """A Xet host that does not resolve, connect or speak TLS: no use waiting for it."""
    return isinstance(exc, ConnectError)


def refused(exc: BaseException) -> bool:
    """A signed URL refused: expired, or a range outside what it signs."""
    return isinstance(exc, AuthError) or (isinstance(exc, RemoteError) and _status(exc) in (403, 404, 410))


def _fills(xf: XetFile, piece: Piece, plans: list[Plan]) -> bool:
    """The answer for ``piece`` places some of the bytes it still lacks (or
    it lacks none): a server that answers a part at a time makes progress,
    one whose answers name nothing of it does not (under the lock)."""
    lacking = gaps(xf.f, piece.start, piece.end)
    if not lacking:
        return True
    left = gaps(xf.f, piece.start, piece.end, [p.file_range() for p in plans])
    return sum(b - a for a, b in left) < sum(b - a for a, b in lacking)


def _new(xf: XetFile, plans: list[Plan]) -> list[Plan]:
    """The ``plans`` whose file bytes are not all on disk, being fetched or
    planned already (under the lock): a server that answers a piece with
    more than the piece (the whole file, its ``Range`` ignored) would
    otherwise have each xorb range fetched once per piece."""
    held = xf.f.busy(spans_of(xf.items))
    return [p for p in plans if held.gaps(*p.file_range())]


def _cut(ranges: list[tuple[int, int]], whole: Slicer | None) -> list[tuple[int, int]]:
    """File ranges cut into pieces; while the whole file's answer is fresh
    (``whole``), a piece ends where one of its parts does when one ends near
    the piece's size: the planners take its URLs from the answer instead of
    asking. (Never much longer: a xorb range is not split, and a long one
    alone at the end of a pull is its tail.)"""
    size = min(PIECE_MAX, max(PIECE_MIN, sum(b - a for a, b in ranges) // PIECES))
    out = []
    for a, b in ranges:
        start = a
        while start < b:
            end = min(b, start + size)
            if whole is not None:
                cut = whole.cut_within(start + size // 2, end) or whole.cut_at_or_after(end, b)
                end = cut if cut - start <= size + size // 2 else end
            out.append((start, end))
            start = end
    return out


class XetRun:
    def __init__(self, state: State, hasher: Hasher, retries: Retries, *, direct: Callable[[str], bool],
                 start_workers: Callable[[], None]) -> None:
        self.s = state
        self.hasher = hasher
        self.retries = retries
        self.direct = direct
        self.start_workers = start_workers
        self.files: dict[FileState, XetFile] = {}
        self._pieces: deque[tuple[XetFile, Piece]] = deque()  # (in xf.planning while wanted)
        self.sharing = Sharing(state, self.files)
        state.sched.quota = self.sharing.quota
        state.on_exhausted = self.exhausted
        self._planned = threading.Condition(state.lock)  # planners: a piece to ask, or room to queue
        state.others.append(self._planned)  # (and the end of the run: joined at once)
        state.on_settle = self.settled
        state.on_discard = self.discarded

    # -- the start -----------------------------------------------------------------------------
    def begin(self) -> None:
        """Plan every Xet file of the run (under the lock): local copies of
        what the home holds, pieces for the rest."""
        for f in self.s.files:
            job = f.job.xet
            if job is None or not f.active:
                continue
            xf = XetFile(f, job)
            self.files[f] = xf
            f.mixed = True  # its plain candidates fetch beside Xet, until one side gives up
            for c in job.copies:
                if not f.done.covers(c.offset, c.offset + c.length):
                    xf.copying.append((c.offset, c.offset + c.length))
            self._plan(xf, gaps(f, 0, f.size, xf.copying))
        self._pieces = interleave(self._pieces, LANES)

    def threads(self) -> list[threading.Thread]:
        out = [threading.Thread(target=self._planner, daemon=True, name=f"qh-xet-{i}")
               for i in range(min(PLANNERS, max(1, len(self._pieces))))]
        copying = [xf.f for xf in self.files.values() if xf.copying]
        if copying:
            out.append(threading.Thread(target=Copier(self.s, self, copying).run, daemon=True, name="qh-copy"))
        return out

    def _plan(self, xf: XetFile, ranges: list[tuple[int, int]], replans: int = 0) -> None:
        """Queue ``ranges`` of the file as pieces to reconstruct (under the lock)."""
        for start, end in _cut(ranges, xf.job.slicer(replans)):
            piece = Piece(start, end, replans)
            xf.planning.append(piece)
            self._pieces.append((xf, piece))
        self._held(xf)
        self._planned.notify_all()

    def _held(self, xf: XetFile) -> None:
        """The file item's carve skips what its Xet side holds; what it
        releases is the file item's to fetch (under the lock)."""
        xf.skips(self.sharing.overtakes())
        self.s.sched.requeue(xf.f)

    # -- the planners ----------------------------------------------------------------------------
    def _planner(self) -> None:
        while True:
            got = self._next_piece()
            if got is None:
                return
            xf, piece = got
            try:
                answer = xf.job.part(piece.start, piece.end, piece.replans) or xf.job.ask((piece.start, piece.end))
                plans = plan_items(answer, piece.start, xf.f.size)
            except QwenhomeError as exc:
                with self.s.lock:
                    self._plan_failed(xf, piece, exc)
                continue
            except Exception as exc:  # a bug: the run must end, not hang
                self.s.abort(exc)
                return
            with self.s.lock:
                self._queue_items(xf, piece, plans)

    def _next_piece(self) -> tuple[XetFile, Piece] | None:
        """The next piece to ask once it is due and the queues have room; None: stop."""
        s = self.s
        with s.lock:
            while True:
                if s.stopped:
                    return None
                now = s.clock()
                if len(s.sched.fast) + len(s.sched.slow) < LOOKAHEAD + s.ctl.target:
                    for xf, piece in list(self._pieces):
                        if piece not in xf.planning or not xf.f.active:
                            self._pieces.remove((xf, piece))  # dropped meanwhile
                        elif piece.ready_at <= now and (not xf.f.mixed or self.sharing.may_claim()):
                            self._pieces.remove((xf, piece))
                            if self._claim(xf, piece):
                                return xf, piece
                self._planned.wait(0.1)

    def _claim(self, xf: XetFile, piece: Piece) -> bool:
        """A planner takes ``piece`` (under the lock); False: nothing of it is left."""
        if xf.f.mixed and not self.sharing.claim(xf, piece, self._pieces):
            return False
        piece.asked = True
        self._held(xf)
        return True

    def _queue_items(self, xf: XetFile, piece: Piece, plans: list[Plan]) -> None:
        """A piece's reconstruction came: its xorb ranges join the queues (under the lock)."""
        if piece not in xf.planning:
            return  # dropped meanwhile (the file is done, fetched again, or left Xet)
        xf.planning.remove(piece)
        xf.failures = 0
        xf.rounds = 0 if _fills(xf, piece, plans) else xf.rounds + 1
        items = []
        skip = self.sharing.skip(xf)  # (read only: the answer's ranges share it)
        for plan in _new(xf, plans):
            x = XorbItem.of(xf.f, plan, xf.job.source, xf.job.learned, replans=piece.replans)
            x.slow = not (self.s.loop_on and self.direct(plan.url))
            x.sink.skip = skip
            items.append(x)
        xf.items.update(items)
        self.s.sched.add(items)
        self._held(xf)
        self.s.work.notify_all()
        if any(x.slow for x in items):
            self.start_workers()
        if not items:
            self._check_idle(xf)

    def _plan_failed(self, xf: XetFile, piece: Piece, exc: QwenhomeError) -> None:
        """A reconstruction failed (under the lock): back off, or give up on Xet for the file."""
        if piece not in xf.planning:
            return
        xf.failures += 1
        if exc.transient and not unreachable(exc) and xf.failures <= self.retries.max_retries:
            ra = exc.context.get("retry_after")
            delay = self.retries.backoff.delay(xf.failures, ra if isinstance(ra, float | int) else None)
            piece.ready_at = self.s.clock() + delay
            piece.asked = False  # meanwhile the plain side may take it
            self._pieces.append((xf, piece))
            self._held(xf)
            self.s.emit(RETRY, xf.f, message=f"xet: {exc.code}; retry in {delay:.1f}s")
            return
        self.give_up(xf, exc, everywhere=unreachable(exc))

    # -- items ---------------------------------------------------------------------------------------
    def finished(self, x: XorbItem) -> None:
        """``x`` decoded to its end (under the lock)."""
        xf = self.files[x.file]
        x.status = Status.VERIFIED
        x.failures = 0
        self.s.sched.cancel(x)
        xf.items.discard(x)
        xf.job.xet_bytes += x.size
        self._held(xf)
        self._check_idle(xf)

    def failed(self, x: XorbItem, span: Span, exc: QwenhomeError) -> None:
        """A span of ``x`` failed (under the lock; the span is dropped)."""
        xf = self.files[x.file]
        if xf.gave_up or not x.current:
            return
        if unreachable(exc):
            self.give_up(xf, exc, everywhere=True)
        elif refused(exc):
            self._replan(xf, x, exc)
        elif exc.transient:
            self.s.sched.requeue(x)
            delay = retry_delay(x, span, exc, self.s.clock(), self.retries)
            if delay is None:
                self.give_up(xf, exc)
            else:
                self.s.emit(RETRY, x.file, message=f"xet: {exc.code}: {exc.message}; retry in {delay:.1f}s")
        else:
            self.give_up(xf, exc)

    def _replan(self, xf: XetFile, x: XorbItem, exc: QwenhomeError) -> None:
        """``x``'s URL was refused (expired, or a range it does not sign):
        fresh URLs for what it has left (under the lock)."""
        replans = x.replans + 1 if x.done.covered() == 0 else 1
        if replans > MAX_REPLANS:
            self.give_up(xf, exc)
            return
        x.status = Status.FAILED
        self.s.sched.cancel(x)
        xf.items.discard(x)
        f = xf.f
        left = gaps(f, *x.extent, [r for other in xf.items for r in [other.extent]])
        self.s.emit(RETRY, f, message=f"xet: {exc.code}: asking fresh URLs")
        if left:
            self._plan(xf, left, replans)
        else:
            self._held(xf)
            self._check_idle(xf)

    def _check_idle(self, xf: XetFile) -> None:
        """With nothing under way, what the reconstructions left unfilled is
        asked again, a few rounds at most (under the lock)."""
        if xf.gave_up or xf.items or xf.planning or xf.copying or not xf.f.active:
            return
        left = gaps(xf.f, 0, xf.f.size)
        if not left:
            xf.rounds = 0
            return
        # Rounds count answers that filled nothing they were asked
        # (:func:`_fills`), not these gaps: a sharing file's may be the plain
        # side's failures, anyone's to take again.
        if xf.rounds > MAX_ROUNDS:
            self.give_up(xf, IntegrityError(f"{xf.f.name}: the Xet reconstructions leave bytes unfilled",
                                            code="xet-incomplete"))
        else:
            self._plan(xf, left)

    def give_up(self, xf: XetFile, exc: QwenhomeError, everywhere: bool = False) -> None:
        """Xet serves this file no more (with ``everywhere``, no file of the
        run: its hosts are unreachable); its other candidates take what is
        left, keeping what is on disk (under the lock)."""
        for other in list(self.files.values()) if everywhere else [xf]:
            if other.gave_up or not other.f.active:
                continue
            other.gave_up = True
            other.f.mixed = False
            other.drop(self.s.sched)
            if other.plain_off:  # neither kind serves it
                self.s.fail(other.f, exc)
                continue
            self._held(other)
            self.s.emit(SOURCE, other.f, message=f"xet: {exc.code}: {exc.message}; the rest from "
                                                 f"{other.f.candidate().source.label}")
        self.s.work.notify_all()

    def exhausted(self, f: FileState, exc: QwenhomeError) -> bool:
        """``f``'s plain candidates serve it no more (under the lock): True
        when Xet takes what is left, keeping what is on disk."""
        xf = self.files.get(f)
        if xf is None or xf.gave_up or not f.active:
            return False
        if xf.plain_off:
            return True  # (another of its plain spans, refused as the first)
        if left := xf.stop_plain():
            self._plan(xf, left)
        self._held(xf)
        self.s.emit(SOURCE, f, message=f"{exc.code}: {exc.message}; the rest through Xet")
        return True

    # -- hooks from the run's state ---------------------------------------------------------------
    def settled(self, f: FileState) -> None:
        """``f`` is verified or failed: its Xet work ends (under the lock)."""
        xf = self.files.get(f)
        if xf is not None:
            xf.drop(self.s.sched)
            xf.copying.clear()

    def discarded(self, f: FileState, err: IntegrityError) -> bool:
        """``f``'s bytes failed verification and were thrown away (under the
        lock). True when its Xet side takes the verdict: Xet brought bytes,
        so it fetches the file once more, or, the second time, gives up."""
        xf = self.files.get(f)
        if xf is None or xf.gave_up or not xf.job.xet_bytes:
            return False
        xf.drop(self.s.sched)
        xf.copying.clear()
        xf.job.xet_bytes = 0
        if f.integrity_failures > 1:
            self.give_up(xf, err)
        else:
            self.s.emit(RETRY, f, message=f"xet: {err.code}; fetching it again")
            self._plan(xf, [(0, f.size)])
        return True

    # -- local copies (the Copier's owner) --------------------------------------------------------
    def copy_start(self, f: FileState, c: Copy) -> int | None:
        with self.s.lock:
            if (c.offset, c.offset + c.length) not in self.files[f].copying or not f.active:
                return None
            f.open()
            return f.gen

    def copy_done(self, f: FileState, c: Copy, gen: int, exc: OSError | None) -> None:
        xf, rng = self.files[f], (c.offset, c.offset + c.length)
        claimed = False
        with self.s.lock:
            if rng not in xf.copying or f.gen != gen:
                return
            xf.copying.remove(rng)
            if exc is not None:
                log.debug("local chunks of %s not copied from %s (%s): fetched instead", f.name, c.src, exc)
                if not xf.gave_up:
                    self._plan(xf, gaps(f, *rng))
                else:
                    self._held(xf)
                return
            added, claimed = f.land(*rng)
            self.s.done_bytes += added
            if self.s.maps.touched(f, added):
                self.s.sup.notify()
            self._held(xf)
            self._check_idle(xf)
        if claimed:
            self.hasher.hash_claimed(f)
