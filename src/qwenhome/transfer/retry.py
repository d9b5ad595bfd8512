"""Backoff for transient failures: exponential with full jitter, capped, and
``Retry-After`` wins when the server gives one."""

from __future__ import annotations

import random
from dataclasses import dataclass


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
