"""Rendering for the terminal: sizes, tables, and pull progress (bars on a
TTY, plain lines otherwise, JSON lines with ``--json``)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import TextIO

from .errors import printable
from .progress import (
    DONE,
    FILE_DONE,
    FILE_ERROR,
    FILE_START,
    OFFLINE,
    PROGRESS,
    RETRY,
    SOURCE,
    START,
    ProgressEvent,
)


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def _bar(done: int, total: int, width: int = 28) -> str:
    frac = 1.0 if total <= 0 else min(1.0, done / total)
    full = int(frac * width)
    return "[" + "#" * full + "-" * (width - full) + f"] {frac * 100:5.1f}%"


class JsonLines:
    """One JSON document per event on stdout."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out

    def __call__(self, e: ProgressEvent) -> None:
        self.out.write(json.dumps(e.to_dict()) + "\n")
        self.out.flush()

    def close(self) -> None:
        pass


class ProgressView:
    """Bars (total + active files) redrawn in place on a TTY; on a pipe, one
    line per file and a line every few seconds. Writes to stderr."""

    def __init__(self, out: TextIO = sys.stderr, clock: Callable[[], float] = time.monotonic) -> None:
        self.out = out
        self.tty = out.isatty()
        self.clock = clock
        self.active: dict[str, tuple[int, int]] = {}
        self.finished: set[str] = set()
        self.drawn = 0
        self.last_line = 0.0

    def __call__(self, e: ProgressEvent) -> None:
        if e.event == START:
            self._line(f"pulling {e.repo} ({e.message}): {e.files_total} files, "
                       f"{human_size(e.total)} to fetch")
        elif e.event == FILE_START and e.path:
            self.active[e.path] = (e.done, e.total)
        elif e.event == PROGRESS and e.path is None:
            self._progress(e)
        elif e.event == PROGRESS and e.path and e.path not in self.finished:
            self.active[e.path] = (e.done, e.total)
        elif e.event == FILE_DONE and e.path:
            self.active.pop(e.path, None)
            self.finished.add(e.path)
            if not self.tty:
                self._line(f"  done {e.path} ({human_size(e.total)})")
        elif e.event in (RETRY, SOURCE, OFFLINE, FILE_ERROR):
            self._line(f"  {e.event}: {e.path + ': ' if e.path else ''}{e.message}")
        elif e.event == DONE:
            self._clear()

    def _progress(self, e: ProgressEvent) -> None:
        eta = (e.total - e.done) / e.speed if e.speed > 0 else 0
        text = (f"{_bar(e.done, e.total)} {human_size(e.done)}/{human_size(e.total)} "
                f"{human_size(e.speed)}/s ETA {int(eta // 60)}:{int(eta % 60):02d} "
                f"files {e.files_done}/{e.files_total}")
        if self.tty:
            self._clear()
            lines = [text] + [f"  {_bar(d, t, 16)} {human_size(d)}/{human_size(t)}  {p[-40:]}"
                              for p, (d, t) in list(self.active.items())[:4]]
            self.out.write("\n".join(lines) + "\n")
            self.drawn = len(lines)
            self.out.flush()
        elif self.clock() - self.last_line >= 5:
            self.last_line = self.clock()
            self.out.write(text + "\n")

    def _clear(self) -> None:
        if self.tty and self.drawn:
            self.out.write(f"\x1b[{self.drawn}F\x1b[J")
            self.drawn = 0

    def _line(self, text: str) -> None:
        self._clear()
        self.out.write(printable(text) + "\n")  # (messages quote servers: no ESC reaches the terminal)
        self.out.flush()

    def close(self) -> None:
        self._clear()
