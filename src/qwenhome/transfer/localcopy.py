"""Local copies: file bytes another blob of the home holds (a chunk of the
same xorb), copied in the kernel with ``copy_file_range`` (a reflink where
the filesystem shares extents), else through a buffer.

:class:`Copier` is a thread's body: it does the I/O; the run's Xet side
(:class:`~.xetrun.XetRun`, the ``owner``) says whether a copy is still
wanted and decides what a copy added, or what a failed one leaves to fetch.
"""

from __future__ import annotations

import errno
import os
from typing import Protocol

from .files import FileState
from .gate import REFUSED
from .partmap import Intervals
from .sizing import MiB
from .state import State
from .xetjob import Copy

# copy_file_range cannot serve these files (another filesystem, an old kernel): copied through a buffer
_FALLBACK = (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)
COPY_STEP = 8 * MiB  # bytes copied per registration with the file's write gate


class Owner(Protocol):
    def copy_start(self, f: FileState, c: Copy) -> int | None:
        """The file's generation when copy ``c`` is still wanted (its file opened), else None."""

    def copy_done(self, f: FileState, c: Copy, gen: int, exc: OSError | None) -> None:
        """Copy ``c`` was made (``exc`` None) or failed, for the file at generation ``gen``."""


class Copier:
    def __init__(self, state: State, owner: Owner, files: list[FileState]) -> None:
        self.s = state
        self.owner = owner
        self.files = files

    def run(self) -> None:
        """Each file's copies, in file order (its written prefix grows, and its hash follows)."""
        fds: dict[str, int] = {}
        try:
            for f in self.files:
                assert f.job.xet is not None
                for c in f.job.xet.copies:
                    if self.s.stopped:
                        return
                    gen = self.owner.copy_start(f, c)
                    if gen is None:
                        continue
                    try:
                        self._copy(f, c, gen, fds)
                    except OSError as exc:
                        self.owner.copy_done(f, c, gen, exc)
                    else:
                        self.owner.copy_done(f, c, gen, None)
        except BaseException as exc:  # the run must end, not hang
            self.s.abort(exc)
        finally:
            for fd in fds.values():
                os.close(fd)

    @staticmethod
    def _copy(f: FileState, c: Copy, gen: int, fds: dict[str, int]) -> None:
        src = fds.get(str(c.src))
        if src is None:
            src = fds[str(c.src)] = os.open(c.src, os.O_RDONLY)
        gate = f.dest.gate
        for a, b in _parts(f, c):
            # A step at a time: a new generation (under the run's lock) or the
            # hash waits for the write under way, so it must be short on a slow disk too.
            for step in range(a, b, COPY_STEP):
                end = min(b, step + COPY_STEP)
                at = gate.enter(gen, step, end, whole=False)
                if at == REFUSED:
                    continue  # hashed meanwhile (so on disk), or the file moved on
                try:
                    copy_range(src, f.dest.fd, c.src_offset + at - c.offset, f.dest.offset + at, end - at)
                finally:
                    gate.leave(at, end)


def _parts(f: FileState, c: Copy) -> list[tuple[int, int]]:
    """The ranges of copy ``c`` not on disk yet (read without the lock: at
    worst a range is copied again)."""
    done = Intervals(list(f.done.starts), list(f.done.ends))
    return done.gaps(c.offset, c.offset + c.length)


def copy_range(src: int, dst: int, src_at: int, dst_at: int, n: int) -> None:
    """``n`` bytes from ``src`` at ``src_at`` to ``dst`` at ``dst_at``. Raises OSError."""
    while n > 0:
        try:
            moved = os.copy_file_range(src, dst, n, src_at, dst_at)
        except OSError as exc:
            if exc.errno not in _FALLBACK:
                raise
            moved = _copy_buffered(src, dst, src_at, dst_at, min(n, 8 * MiB))
        if moved <= 0:
            raise OSError(errno.EIO, "local file shorter than its recipe says")
        n -= moved
        src_at += moved
        dst_at += moved


def _copy_buffered(src: int, dst: int, src_at: int, dst_at: int, n: int) -> int:
    data = os.pread(src, n, src_at)
    done = 0
    view = memoryview(data)
    while done < len(data):
        done += os.pwrite(dst, view[done:], dst_at + done)
    return len(data)
