"""The hash pipeline: feeding each file's verifier from its written prefix,
and finishing the file when it is whole (verified: installed; not: fetched
again). Claims come from the worker threads that grew a prefix (they hash in
place), from the event loops (queued for the hash threads) and from the
files an earlier run left on disk.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from ..errors import IntegrityError
from ..progress import FILE_DONE, RETRY
from ..repo.hashing import Verifier
from ..store.cache import translate_os_error
from .failover import MAX_INTEGRITY_RETRIES
from .files import FileJob, FileState
from .state import State
from .work import Status

# Bytes the running hash may lag its file's prefix before the loops pause
# for it: the hash is a single stream that must end soon after the last byte.
HASH_AHEAD = 64 << 20


class Hasher:
    def __init__(self, state: State, on_verified: Callable[[FileJob], None]) -> None:
        self.s = state
        self._on_verified = on_verified
        self._queue: deque[FileState] = deque()  # files whose claim a loop took, for the hash threads
        # Bytes the running hash has yet to go through (a hint, written by the
        # hash threads without the lock): past HASH_AHEAD the loops pause.
        self.backlog = 0

    @property
    def behind(self) -> bool:
        return self.backlog > HASH_AHEAD

    def queue(self, f: FileState) -> None:
        """A loop took ``f``'s claim: a hash thread hashes it (under the lock)."""
        self._queue.append(f)
        self.s.hash_work.notify()

    def worker(self) -> None:
        """A hash thread: hash (and install) the files whose claim a loop took."""
        s = self.s
        while True:
            with s.lock:
                while not self._queue:
                    if s.stopped:
                        return
                    s.hash_work.wait(0.5)
                f = self._queue.popleft()
            self.hash_claimed(f)

    def resumed(self, files: list[FileState]) -> None:
        """Files with bytes on disk from an earlier run (or empty ones): hash
        what is there; the I/O paths take over as the prefix grows."""
        s = self.s
        for f in files:
            with s.lock:
                if s.stopped:
                    return
                claimed = f.claim_hash()
            if claimed:
                self.hash_claimed(f)

    def hash_claimed(self, f: FileState) -> None:
        """Hash ``f`` up to its written prefix until caught up (the claim is
        held on entry), verifying and installing it once complete."""
        s = self.s
        try:
            while True:
                with s.lock:
                    due = f.hash_due(stopping=s.fatal is not None)
                if due is None:
                    return
                self._hash_span(f, *due)
        except BaseException as exc:
            with s.lock:
                f.hashing = False
            s.abort(exc)

    def _hash_span(self, f: FileState, verifier: Verifier, gen: int, stop: int) -> None:
        """Hash ``[verifier.hashed, stop)`` in slices, then finish the file if whole."""
        if not f.dest.gate.reserve(gen, verifier.hashed, stop):
            return  # (the file's bytes were thrown away meanwhile)
        try:
            while verifier.hashed < stop and f.gen == gen and self.s.fatal is None:
                self.backlog = stop - verifier.hashed
                try:
                    f.hash_step(verifier, stop)
                except OSError as exc:
                    if f.gen == gen:
                        self.s.abort(translate_os_error(exc, f.job.partial))
                    return
        finally:
            self.backlog = 0  # however the span ends, the loops must not keep pausing
        if verifier.hashed == f.size and f.gen == gen:
            self._finish(f, verifier)

    def _finish(self, f: FileState, verifier: Verifier) -> None:
        """Verified: the map goes, the file is installed, the run counts it.
        Otherwise its bytes are thrown away and it is fetched again."""
        s = self.s
        with s.lock:
            if not f.active or not f.complete():
                return
        err = f.mismatch(verifier)
        if err is not None:
            self._refetch(f, err)
            return
        s.maps.forget(f)
        try:
            f.install(self._on_verified)
        except BaseException as exc:
            with s.lock:
                s.fatal = exc  # (the owner's failure wins over any other)
                s.wake_all()
            return
        with s.lock:
            s.maps.dirty.discard(f)
            s.settle(f, Status.VERIFIED)
        s.emit(FILE_DONE, f, f.size, f.size)

    def _refetch(self, f: FileState, err: IntegrityError) -> None:
        """``f``'s bytes failed verification: fetch it again, from another
        source when there is one (the one that served them is left for the run)."""
        s = self.s
        with s.lock:
            s.done_bytes -= f.done.covered()
            s.sched.cancel(f)
            try:
                f.discard()
            except OSError as exc:
                s.fatal = translate_os_error(exc, f.job.partial)
            s.maps.dirty.add(f)
            s.sched.requeue(f)
            if s.on_discard(f, err):
                s.work.notify_all()
                return
            src = f.candidate().source
            s.emit(RETRY, f, message=f"{err.code} from {src.label}; refetching")
            has_other = any(c.source.name not in s.bad_sources and c.source.name != src.name
                            for c in f.candidates)
            if has_other:
                s.bad_sources.add(src.name)
                s.move_on(f, err)
            elif f.integrity_failures > MAX_INTEGRITY_RETRIES:
                s.move_on(f, err)
            s.work.notify_all()  # the whole file is to fetch again
