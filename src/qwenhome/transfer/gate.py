"""A file's write gate: which writes may still land, and where.

Several threads write one partial file: its own ranges, xorb ranges decoded
into it, local copies, and duplicates (a split range's old connection, a xorb
range the bridge took over). A duplicate can still be writing when the rest
is done. Without a gate, its bytes could land after the hash read that part
(a corrupt xorb then makes a verified file wrong), after the file was
installed, or through a descriptor number the file already closed and the
system gave to another file.

So each write registers for the duration of its system call (never while it
waits for the network), and:

- nothing is written below what the hash has reserved (those bytes are on
  disk, recorded, and read or about to be read);
- the hash reserves a range only once no write into it is under way;
- a new generation (the file's bytes thrown away) and the seal (the file is
  verified and about to close) each wait for the writes under way to end,
  and refuse the ones of another generation, or all of them.

The cost is a lock round per system call, not per byte.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

# enter()'s answer when nothing may be written
REFUSED = -1


class WriteGate:
    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._writing: list[tuple[int, int]] = []  # writes under way: (start, end)
        self._hashed = 0  # below this, no write may land
        self._gen = 0
        self._sealed = False
        self._waiting = 0

    def enter(self, gen: int, start: int, end: int, *, whole: bool) -> int:
        """Register a write of ``[start, end)`` for the file's generation
        ``gen``: returns where it may begin (bytes below are hashed, hence
        on disk already), or REFUSED: another generation, the file sealed,
        nothing left, or (``whole``) not all of it. A registered write ends
        with :meth:`leave` (the same ``end``, the start returned)."""
        with self._cond:
            if self._sealed or gen != self._gen:
                return REFUSED
            at = max(start, self._hashed)
            if at >= end or (whole and at != start):
                return REFUSED
            self._writing.append((at, end))
            return at

    def leave(self, start: int, end: int) -> None:
        with self._cond:
            self._writing.remove((start, end))
            if self._waiting:
                self._cond.notify_all()

    def reserve(self, gen: int, start: int, end: int) -> bool:
        """The hash is about to read ``[start, end)``: wait for the writes
        into it under way, then keep all later ones out. False when ``gen``
        is no longer the file's (the hash is stale)."""
        with self._cond:
            self._wait(lambda: gen != self._gen or not any(a < end and b > start for a, b in self._writing))
            if gen != self._gen:
                return False
            self._hashed = max(self._hashed, end)
            return True

    def renew(self, gen: int) -> None:
        """The file's bytes are thrown away (generation ``gen`` starts):
        wait out the writes under way, refuse older ones from now on."""
        with self._cond:
            self._gen, self._hashed = gen, 0
            self._wait(lambda: not self._writing)

    def seal(self) -> None:
        """No write from now on (the file is about to be closed and installed)."""
        with self._cond:
            self._sealed = True
            self._wait(lambda: not self._writing)

    @property
    def sealed(self) -> bool:
        return self._sealed

    def _wait(self, ready: Callable[[], bool]) -> None:
        self._waiting += 1
        try:
            self._cond.wait_for(ready)
        finally:
            self._waiting -= 1
