"""Progress events of long work (pulls), and the sink type consumers implement.

The library emits events; the CLI renders them as bars or JSON lines and the
web API streams them as server-sent events. Nothing here prints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

# Event names, stable for --json consumers and the web API.
START = "start"  # metadata known: files_total, total (bytes still to fetch), cached
FILE_START = "file-start"
PROGRESS = "progress"  # throttled: done/total bytes, speed
FILE_DONE = "file-done"
FILE_ERROR = "file-error"
RETRY = "retry"
SOURCE = "source"  # which source is used, failover
OFFLINE = "offline"
DONE = "done"


@dataclass(frozen=True)
class ProgressEvent:
    event: str
    repo: str = ""
    path: str | None = None
    done: int = 0
    total: int = 0
    speed: float = 0.0
    files_done: int = 0
    files_total: int = 0
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, "")}


EventSink = Callable[[ProgressEvent], None]


def ignore(_event: ProgressEvent) -> None:
    """The default sink."""
