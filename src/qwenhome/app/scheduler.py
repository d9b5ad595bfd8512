"""Generation off the event loop, one request at a time, first come first served.

A CPU engine gains nothing from running two generations at once (they share
the same cores), so one worker thread takes jobs from a FIFO queue: every
request gets the whole machine in arrival order, and the event loop stays
free to answer ``/health``, the page and model management. The queue is
bounded; past the bound a request is refused at once (``queue-full``) rather
than left waiting. A client that goes away cancels its job, queued or running.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import queue
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from ..errors import QwenhomeError
from .engine import Completion, LocalEngine, Message, SamplingParams, Started
from .errors import ApiError


@dataclass
class _Job:
    messages: Sequence[Message]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[Started | str | Completion | BaseException]
    seq: int = 0
    cancel: threading.Event = field(default_factory=threading.Event)

    def send(self, item: Started | str | Completion | BaseException) -> None:
        # The loop may be gone when a client disconnected and the server stopped.
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, item)
        except RuntimeError:
            self.cancel.set()


class Scheduler:
    """Runs :meth:`LocalEngine.generate` jobs on one worker thread, in order."""

    def __init__(self, engine: LocalEngine, *, max_queue: int = 32) -> None:
        self.engine = engine
        self.max_queue = max_queue
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._waiting = 0
        self._lock = threading.Lock()
        self._running = False
        self._seq = itertools.count(1)
        # (arrival number, start, end, outcome) of recent jobs: evidence of the order served.
        self.history: collections.deque[tuple[int, float, float, str]] = collections.deque(maxlen=64)
        self._worker = threading.Thread(target=self._work, name="qwenhome-generate", daemon=True)
        self._worker.start()

    @property
    def queued(self) -> int:
        return self._waiting

    @property
    def busy(self) -> bool:
        return self._running

    def close(self) -> None:
        self._jobs.put(None)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            with self._lock:
                self._waiting -= 1
                self._running = True
            started = time.monotonic()
            outcome = "cancelled"
            try:
                if not job.cancel.is_set():
                    completion = self.engine.generate(job.messages, job.params, job.send, job.cancel)
                    job.send(completion)
                    if completion.finish_reason != "cancelled":
                        outcome = "done"
            except BaseException as exc:  # delivered to the request, never kills the worker
                outcome = "error"
                job.send(exc)
            finally:
                self.history.append((job.seq, started, time.monotonic(), outcome))
                with self._lock:
                    self._running = False

    async def stream(self, messages: Sequence[Message], params: SamplingParams
                     ) -> AsyncIterator[Started | str | Completion]:
        """Yield :class:`Started` once the engine accepted the prompt, text
        pieces, then the :class:`Completion`. Raises what the engine raised
        (a refused prompt before :class:`Started`). Closing the iterator early
        cancels the job."""
        with self._lock:
            if self._waiting >= self.max_queue:
                raise ApiError(
                    429,
                    f"{self._waiting} requests are already waiting",
                    code="queue-full",
                    hint="retry in a moment; the engine answers one request at a time",
                )
            self._waiting += 1
            seq = next(self._seq)
        job = _Job(messages, params, asyncio.get_running_loop(), asyncio.Queue(), seq)
        self._jobs.put(job)
        try:
            while True:
                item = await job.events.get()
                if isinstance(item, BaseException):
                    if isinstance(item, QwenhomeError):
                        raise item
                    raise QwenhomeError(f"generation failed: {item}", code="generation-failed") from item
                yield item
                if isinstance(item, Completion):
                    return
        finally:
            job.cancel.set()
