"""Backoff for transient failures: exponential with full jitter, capped, and
``Retry-After`` wins when the server gives one."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ..errors import QwenhomeError

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    base: float = 0.5
    cap: float = 20.0
    rng: random.Random = random.Random()

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        if retry_after is not None:
            return retry_after
        ceiling = min(self.cap, self.base * (2 ** max(0, attempt - 1)))
        return float(ceiling / 2 + self.rng.uniform(0, ceiling / 2))


def call_with_retries(
    fn: Callable[[], T],
    *,
    attempts: int,
    backoff: Backoff,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[QwenhomeError, float], None] | None = None,
) -> T:
    """Call ``fn``; retry transient qwenhome errors up to ``attempts`` times in all."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except QwenhomeError as exc:
            if not exc.transient or attempt >= attempts:
                raise
            ra = exc.context.get("retry_after")
            delay = backoff.delay(attempt, ra if isinstance(ra, float | int) else None)
            if on_retry is not None:
                on_retry(exc, delay)
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
