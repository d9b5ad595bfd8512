"""Generation one request at a time, first come first served, on the event loop.

A CPU engine gains nothing from running two generations at once (they share
the same cores), so requests take turns on a FIFO lock: every request gets
the whole machine in arrival order. The engine runs elsewhere (its worker
process) and its events arrive on the event loop, so waiting costs no thread:
the loop stays free to answer ``/health``, the page and model management,
and a piece of text reaches its client without a hop through another thread.
The queue is bounded; past the bound a request is refused at once
(``queue-full``) rather than left waiting. A client that goes away cancels
its job, queued or running.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from collections.abc import AsyncIterator, Sequence

from ..errors import QwenhomeError
from .engine import Completion, LocalEngine, Message, SamplingParams, Started
from .errors import ApiError


class Scheduler:
    """Runs :meth:`LocalEngine.generate` jobs one at a time, in arrival order."""

    def __init__(self, engine: LocalEngine, *, max_queue: int = 32) -> None:
        self.engine = engine
        self.max_queue = max_queue
        self._turn = asyncio.Lock()  # wakes its waiters in the order they came
        self._waiting = 0
        self._running = False
        self._seq = itertools.count(1)
        # (arrival number, start, end, outcome) of recent jobs: evidence of the order served.
        self.history: collections.deque[tuple[int, float, float, str]] = collections.deque(maxlen=64)

    @property
    def queued(self) -> int:
        return self._waiting

    @property
    def busy(self) -> bool:
        return self._running

    def close(self) -> None:
        """Nothing to stop: what waits or runs ends with the worker's stop error."""

    async def stream(self, messages: Sequence[Message], params: SamplingParams
                     ) -> AsyncIterator[Started | str | Completion]:
        """Yield :class:`Started` once the engine accepted the prompt, text
        pieces, then the :class:`Completion`. Raises what the engine raised
        (a refused prompt before :class:`Started`). Closing the iterator early
        cancels the job."""
        if self._waiting >= self.max_queue:
            raise ApiError(
                429,
                f"{self._waiting} requests are already waiting",
                code="queue-full",
                hint="retry in a moment; the engine answers one request at a time",
            )
        self._waiting += 1
        seq = next(self._seq)
        try:
            await self._turn.acquire()
        finally:
            self._waiting -= 1
        started = time.monotonic()
        outcome = "cancelled"
        self._running = True
        events = self.engine.generate(messages, params)
        try:
            async for item in events:
                if isinstance(item, Completion) and item.finish_reason != "cancelled":
                    outcome = "done"
                yield item
        except QwenhomeError:
            outcome = "error"
            raise
        except Exception as exc:  # delivered to the request as a stable error
            outcome = "error"
            raise QwenhomeError(f"generation failed: {exc}", code="generation-failed") from exc
        finally:
            await events.aclose()  # cancels a generation still running
            self.history.append((seq, started, time.monotonic(), outcome))
            self._running = False
            self._turn.release()
