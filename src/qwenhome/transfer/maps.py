"""When the part maps of a run's files are written: what a kill -9 can cost
against how often maps are rewritten."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from . import partmap
from .files import FileState
from .partmap import Intervals
from .sizing import MiB

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Saving:
    """When a file's part map is saved, besides the supervisor's tick (0.1 s)."""

    every: int = 32 * MiB  # after this many new bytes in the run: bounds a kill -9's cost on a fast link
    # On the tick, a file with less than this on disk waits until its first
    # unsaved bytes are ``age`` old: most small files are done by then, and a
    # pull of many would otherwise rewrite hundreds of maps every tick.
    min_bytes: int = 4 * MiB
    age: float = 1.0


class PartMaps:
    """The files whose maps are out of date. ``lock`` is the run's lock: the
    dirty set and the files' intervals are read and changed under it."""

    def __init__(self, lock: AbstractContextManager[object], clock: Callable[[], float],
                 saving: Saving = Saving()) -> None:
        self._lock = lock
        self._clock = clock
        self.saving = saving
        self._writes = threading.Lock()  # map writes, and a verified file's map removal
        self.dirty: set[FileState] = set()
        self._unsaved = 0  # bytes recorded since the last save

    def touched(self, f: FileState, n: int) -> bool:
        """``n`` new bytes of ``f`` are on disk (under the run's lock). True
        when enough went unsaved that the maps should be saved now."""
        if f not in self.dirty:
            f.dirty_since = self._clock()
            self.dirty.add(f)
        self._unsaved += n
        return self._unsaved >= self.saving.every

    def save(self, files: Iterable[FileState], force: bool = False) -> None:
        """Write the part maps of ``files`` that have new bytes: on the regular
        tick only those due (see :class:`Saving`); forced saves take every file."""
        now = self._clock()
        with self._writes:
            with self._lock:
                if force:
                    chosen = list(files)
                    self.dirty.clear()
                else:
                    chosen = [f for f in self.dirty if f.done.covered() >= self.saving.min_bytes
                              or now - f.dirty_since >= self.saving.age]
                    self.dirty.difference_update(chosen)
                snap = [
                    (f.job.partial, f.job.key, f.job.size, Intervals(list(f.done.starts), list(f.done.ends)),
                     f.validator)
                    for f in chosen
                    if not f.unmapped and f.done.starts  # a failed file's bytes serve the next round
                ]
                self._unsaved = 0
            for partial, key, size, done, validator in snap:
                try:
                    partmap.save(partial, key, size, done, validator)
                except OSError as exc:  # a lost map only costs re-downloading; never fatal
                    log.debug("part map of %s not saved: %s", partial, exc)

    def forget(self, f: FileState) -> None:
        """``f`` is verified: its map goes and is never written again. Under
        the write lock: a save that took this file's map before it was
        verified would otherwise write it back after the unlink."""
        with self._writes:
            with self._lock:
                f.unmapped = True
                self.dirty.discard(f)
            partmap.map_path(f.job.partial).unlink(missing_ok=True)
