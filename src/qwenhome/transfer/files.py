"""A file being fetched: the bytes recorded on disk, the claim on its hash,
its hashing, and the verdict and install that finish it.

sha256 is sequential, so each file has one verifier fed in order, by one
thread at a time: whoever grows the file's written prefix claims it and
hashes up to the prefix, then looks again before letting go. Hashing thus
runs in the threads that just wrote the bytes (page cache still warm),
several files at once, instead of trailing the transfer in one thread.
"""

from __future__ import annotations

import errno
import mmap
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import IntegrityError
from ..repo.hashing import Verifier
from .partmap import Intervals
from .sizing import KiB, MiB
from .work import Candidate, Destination, Item, Span

if TYPE_CHECKING:  # (the Xet side is loaded only for a pull with Xet files)
    from .xetjob import XetJob

# Fault the mapped pages in one go (they are in the page cache: just written).
_MAP_POPULATE = getattr(mmap, "MAP_POPULATE", 0)
HASH_SLICE = 32 * MiB  # bytes hashed per step: the backlog hint and a stop are looked at between steps
SMALL_SPAN = 256 * KiB  # a span this small costs less copied than mapped and unmapped


@dataclass
class FileJob:
    key: str  # the blob name (sha256 or git oid); also names the partial file
    path: str
    size: int
    sha256: str | None
    blob_id: str | None
    candidates: list[Candidate]
    partial: Path
    xet: XetJob | None = None  # its bytes may also come through Xet (xorb ranges, local chunks)


@dataclass(eq=False, kw_only=True)
class FileState(Item):
    """One file of a run: an :class:`Item` whose bytes go to its partial file
    and are verified as its written prefix grows. Changed under the run's lock
    but for the hashing, which only its claim holder does."""

    job: FileJob
    verifier: Verifier
    integrity_failures: int = 0
    hashing: bool = False  # the hash claim: one thread at a time feeds the verifier
    unmapped: bool = False  # verified: its part map is gone and must not be written again
    dirty_since: float = 0.0  # when its part map last became out of date
    held_ranges: list[tuple[int, int]] = field(default_factory=list)  # what its Xet side fills (see held)
    overtake_ranges: list[tuple[int, int]] | None = None  # (see overtake: what Xet holds but for its ranges under way)
    # Its plain candidates (the bridge, mirrors) fetch ranges beside its Xet
    # side, each kind with its share of the connections (see xetrun.py).
    mixed: bool = False

    @classmethod
    def of(cls, job: FileJob, done: Intervals, validator: str | None) -> FileState:
        return cls(name=job.path, size=job.size, candidates=job.candidates, dest=Destination(job.partial),
                   done=done, validator=validator, job=job, verifier=Verifier(job.size, job.sha256, job.blob_id))

    # -- recording ---------------------------------------------------------------------
    def record(self, span: Span, pos: int, n: int) -> bool:
        """``n`` bytes of ``span`` are on disk at ``pos`` (the span is current).
        True when the caller now holds the hash claim."""
        grows_prefix = pos <= self.done.prefix()
        self.done.add(pos, pos + n)
        span.cur = pos + n
        if span.cur >= span.end:
            self.failures = 0  # a whole span came: the source works
        return grows_prefix and self.claim_hash()

    def land(self, start: int, end: int) -> tuple[int, bool]:
        """Bytes ``[start, end)`` reached the file some other way than one of
        its spans (decoded from xorbs, copied from a local file): how many
        were new, and whether the caller now holds the hash claim."""
        grows_prefix = start <= self.done.prefix()
        added = self.done.add_new(start, end)
        return added, grows_prefix and added > 0 and self.claim_hash()

    def held(self) -> Iterable[tuple[int, int]]:
        return self.held_ranges

    def overtake(self) -> Iterable[tuple[int, int]] | None:
        return self.overtake_ranges

    def share(self) -> str:
        return "plain" if self.mixed else ""

    def complete(self) -> bool:
        return self.size == 0 or self.done.covers(0, self.size)

    # -- the hash -----------------------------------------------------------------------
    def claim_hash(self) -> bool:
        """Take the verifier if it has work."""
        if self.hashing or not self.active:
            return False
        if self.done.prefix() <= self.verifier.hashed < self.size:
            return False
        self.hashing = True
        return True

    def hash_due(self, stopping: bool) -> tuple[Verifier, int, int] | None:
        """What the claim holder hashes next: (verifier, gen, up to), or None
        when caught up (or ``stopping``), releasing the claim: growth from now
        on finds it free."""
        verifier, prefix = self.verifier, self.done.prefix()
        if not self.active or stopping or prefix <= verifier.hashed < self.size:
            self.hashing = False
            return None
        self.open()  # a resumed file may be complete already
        return verifier, self.gen, prefix

    def hash_step(self, verifier: Verifier, stop: int) -> None:
        """Hash the next slice of ``[verifier.hashed, stop)`` straight from the
        page cache through a read-only mapping: no copy into a buffer (copies
        are what a transfer costs most on a busy machine). Raises OSError."""
        pos = verifier.hashed
        end = min(stop, pos + HASH_SLICE)
        at, to = self.dest.offset + pos, self.dest.offset + end
        try:
            if end - pos <= SMALL_SPAN:
                data = os.pread(self.dest.fd, end - pos, at)
                if len(data) < end - pos:
                    raise OSError(errno.EIO, f"partial file shorter than {end} bytes")
                verifier.update(data)
                return
            base = at - at % mmap.ALLOCATIONGRANULARITY
            with mmap.mmap(self.dest.fd, to - base, flags=mmap.MAP_SHARED | _MAP_POPULATE,
                           prot=mmap.PROT_READ, offset=base) as m, memoryview(m) as view:
                verifier.update(view[at - base : to - base])
        except ValueError as exc:  # (mmap's: a file shorter than the mapping)
            raise OSError(str(exc)) from exc

    # -- the finish ----------------------------------------------------------------------
    def mismatch(self, verifier: Verifier) -> IntegrityError | None:
        """The verdict on a wholly hashed file: None when it is verified."""
        if verifier.ok():
            return None
        return IntegrityError(
            f"{self.job.path}: {verifier.algorithm} mismatch (expected {verifier.expected[:12]}…, "
            f"got {verifier.hexdigest()[:12]}…)", path=self.job.path)

    def install(self, on_verified: Callable[[FileJob], None]) -> None:
        """The verified partial file goes to its owner (who moves it into the
        store); no write lands after this (the close seals the file's gate)."""
        self.dest.close()
        if self.size == 0:
            self.job.partial.touch()
        on_verified(self.job)

    def discard(self) -> None:
        """Its bytes failed verification: throw them away (older spans go
        stale) and start again; the caller cancels its spans. Raises OSError
        when the partial file cannot be emptied."""
        self.gen += 1
        self.dest.gate.renew(self.gen)  # (the writes under way end first; older ones are refused)
        self.done.clear()
        self.verifier = Verifier(self.size, self.job.sha256, self.job.blob_id)
        self.integrity_failures += 1
        os.ftruncate(self.dest.fd, 0)
        os.ftruncate(self.dest.fd, self.dest.offset + self.size)

    def restart(self, no_ranges: bool) -> None:
        """An answer gave the whole file (ranges ignored, or If-Range found the
        content changed): it starts again from byte 0; the caller gives the
        answer's span the whole file."""
        self.gen += 1
        self.dest.gate.renew(self.gen)
        self.done.clear()
        self.verifier = Verifier(self.size, self.job.sha256, self.job.blob_id)
        self.no_ranges = no_ranges
        self.validator = None
