"""Which byte ranges of a partial file are on disk, persisted beside it so that
a killed process resumes where it stopped.

The map is written with an atomic rename; it only ever claims bytes that were
written to the partial file before the claim (``pwrite`` first, then
``mark``), so after ``kill -9`` it may under-claim but never over-claim. The
final hash check catches anything else.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..store.cache import unique_suffix

log = logging.getLogger(__name__)


@dataclass
class Intervals:
    """Sorted, merged half-open intervals ``[start, end)``."""

    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)

    def add(self, start: int, end: int) -> None:
        if end <= start:
            return
        i = bisect.bisect_left(self.ends, start)  # first interval that may touch
        j = bisect.bisect_right(self.starts, end)  # first interval strictly after
        if i < j:
            start = min(start, self.starts[i])
            end = max(end, self.ends[j - 1])
        self.starts[i:j] = [start]
        self.ends[i:j] = [end]

    def add_new(self, start: int, end: int) -> int:
        """:meth:`add`, returning how many of the bytes were not covered yet."""
        if end <= start:
            return 0
        i = bisect.bisect_left(self.ends, start)
        j = bisect.bisect_right(self.starts, end)
        known = sum(max(0, min(e, end) - max(s, start)) for s, e in zip(self.starts[i:j], self.ends[i:j], strict=True))
        self.add(start, end)
        return end - start - known

    def prefix(self) -> int:
        """Length of the covered prefix starting at 0."""
        return self.ends[0] if self.starts and self.starts[0] == 0 else 0

    def covered(self) -> int:
        return sum(e - s for s, e in zip(self.starts, self.ends, strict=True))

    def covers(self, start: int, end: int) -> bool:
        if end <= start:
            return True
        i = bisect.bisect_right(self.starts, start) - 1
        return i >= 0 and self.ends[i] >= end

    def first_gap(self, start: int, limit: int) -> tuple[int, int] | None:
        """The first uncovered ``[s, e)`` at or after ``start`` below ``limit``."""
        pos = start
        i = bisect.bisect_right(self.starts, pos) - 1
        if i >= 0 and self.ends[i] > pos:
            pos = self.ends[i]
        if pos >= limit:
            return None
        k = bisect.bisect_right(self.starts, pos)
        end = self.starts[k] if k < len(self.starts) else limit
        return pos, min(end, limit)

    def gaps(self, start: int, limit: int) -> list[tuple[int, int]]:
        """Every uncovered ``[s, e)`` of ``[start, limit)``, in order."""
        out = []
        while (gap := self.first_gap(start, limit)) is not None:
            out.append(gap)
            start = gap[1]
        return out

    def pairs(self) -> list[list[int]]:
        return [[s, e] for s, e in zip(self.starts, self.ends, strict=True)]

    def clear(self) -> None:
        self.starts.clear()
        self.ends.clear()


def map_path(partial: Path) -> Path:
    return partial.with_name(partial.name + ".json")


def load(partial: Path, key: str, size: int) -> tuple[Intervals, str | None]:
    """Done intervals and the stored validator; empty when absent or for another file."""
    done = Intervals()
    try:
        with open(f"{partial}.json", "rb") as fh:  # map_path, without a Path per file
            data = json.loads(fh.read())
        st = partial.stat()
    except FileNotFoundError:
        return done, None  # nothing fetched yet
    except (OSError, ValueError) as exc:
        log.debug("ranges of %s not read (%s): fetched from the start", partial, exc)
        return done, None
    if data.get("key") != key or data.get("size") != size or st.st_size != size:
        return done, None
    for s, e in data.get("done", []):
        if isinstance(s, int) and isinstance(e, int) and 0 <= s < e <= size:
            done.add(s, e)
    validator = data.get("validator")
    return done, validator if isinstance(validator, str) else None


def save(partial: Path, key: str, size: int, done: Intervals, validator: str | None) -> None:
    path = map_path(partial)
    tmp = path.with_name(f".{path.name}.{unique_suffix()}")
    data = json.dumps({"key": key, "size": size, "validator": validator, "done": done.pairs()}).encode()
    # Raw descriptors: a pull saves hundreds of maps, and open() adds a few
    # system calls each (tty check, seek) that a map does not need.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # e.g. a full disk: no stray temporary map
        raise


def sweep(folder: Path, partials: set[str]) -> None:
    """Remove the temporary maps of ``partials`` (names in ``folder``) that a
    process killed while saving one left behind (``.NAME.json.SUFFIX``): the
    caller fetches these files now (it holds their locks), so no other
    process is saving their maps."""
    prefixes = tuple(f".{name}.json." for name in partials)
    try:
        names = [n for n in os.listdir(folder) if n.startswith(prefixes)]
    except OSError as exc:
        log.debug("temporary maps in %s not looked for: %s", folder, exc)
        return
    for n in names:
        try:
            (folder / n).unlink(missing_ok=True)
        except OSError as exc:  # only a few bytes stay, until `qwenhome gc`
            log.debug("temporary map %s not removed: %s", n, exc)


def discard(partial: Path) -> None:
    for p in (partial, map_path(partial)):
        p.unlink(missing_ok=True)
