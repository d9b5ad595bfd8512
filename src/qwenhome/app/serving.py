"""What is served: one engine per kind (chat, image), each in its worker
process, and the readiness they add up to.

    slot = ChatSlot("Org/Name", snapshot, WorkerOptions(), max_queue=32, ready_wait=60)
    slot.start()                       # the worker loads; the scheduler takes requests at once
    await slot.until_ready(60)
    slot.close(ApiError(409, ..., code="model-switched"))

Readiness (``/health``): ``ready`` when every served engine is; else
``error`` when one failed to load (or crashed too often), ``restarting``
while one comes back from a crash, ``loading`` while one loads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from ..errors import QwenhomeError
from .scheduler import Scheduler
from .workers.chat import RemoteChatEngine
from .workers.process import (
    FAILED,
    LOADING,
    READY,
    RESTARTING,
    WorkerOptions,
    WorkerProcess,
    WorkerSpec,
)

DEFAULT_READY_WAIT = 60.0  # seconds a request waits for an engine that loads or restarts


class Served(Protocol):
    """An engine the API serves (the chat slot, the image service)."""

    kind: str

    @property
    def model(self) -> str: ...

    @property
    def state(self) -> str: ...

    def describe(self) -> dict[str, Any]: ...

    async def until_ready(self, timeout: float) -> bool: ...

    def wait_settled(self, timeout: float | None = None) -> bool: ...

    def unavailable(self) -> QwenhomeError: ...


def overall(states: Iterable[str]) -> str:
    """The readiness of the whole from its engines' states."""
    seen = set(states)
    for state in (FAILED, RESTARTING, LOADING):
        if state in seen:
            return "error" if state == FAILED else state
    return READY if seen <= {READY} else LOADING


class ChatSlot:
    """The served chat model: its worker and the scheduler in front of it."""

    kind = "chat"

    def __init__(self, model: str, snapshot: Path, options: WorkerOptions, *, max_queue: int,
                 ready_wait: float, say: Any = None, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """``loop``: the server's event loop, which then reads the worker's messages itself."""
        self.worker = WorkerProcess(WorkerSpec("chat", model, snapshot), options, say, loop)
        self.engine = RemoteChatEngine(self.worker, ready_wait)
        self.scheduler = Scheduler(self.engine, max_queue=max_queue)

    @property
    def model(self) -> str:
        return self.worker.model

    @property
    def snapshot(self) -> Path:
        return self.worker.spec.snapshot

    @property
    def state(self) -> str:
        return self.worker.state

    def start(self) -> None:
        self.worker.start()

    def describe(self) -> dict[str, Any]:
        out = self.worker.describe()
        out["queue"] = {"waiting": self.scheduler.queued, "busy": self.scheduler.busy}
        return out

    async def until_ready(self, timeout: float) -> bool:
        return await self.worker.until_ready(timeout)

    def wait_settled(self, timeout: float | None = None) -> bool:
        return self.worker.wait_settled(timeout)

    def unavailable(self) -> QwenhomeError:
        return self.worker.unavailable()

    def close(self, error: QwenhomeError | None = None) -> None:
        """Stop taking work; what waits or runs ends with ``error``."""
        self.scheduler.close()
        self.worker.stop(error)


__all__ = ["DEFAULT_READY_WAIT", "READY", "ChatSlot", "Served", "overall"]
