"""The least a request must bring. A server that trickles a body (a few bytes
every second) is never silent long enough for the stall time-out and would
hold its range, and so the pull, forever. Both I/O paths count each
request's bytes (head and body) over consecutive windows; a window that
brought fewer than its floor ends the request as a stall does: retried, then
the file moves to its next source. config.toml's ``[network] min_rate`` and
``rate_window`` set the rate and the window; a rate of 0 turns the rule off."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Timeouts
from ..errors import ReadTimeoutError

# The defaults of config.toml's `[network] min_rate` and `rate_window`.
# Bytes/s over a window: 2 kbit/s on one connection finishes no model, while
# a 1 Mbit/s link shared by 64 connections still gives each 8 times this.
MIN_RATE = Timeouts.min_rate
# Seconds: long enough that a slow link's bursts and pauses (TCP recovery, a
# busy server) average out.
WINDOW = Timeouts.rate_window


@dataclass(frozen=True)
class MinRate:
    window: float = WINDOW
    rate: float = MIN_RATE  # 0: no floor (the rule is off)

    @property
    def floor(self) -> int:
        """Bytes a window must bring."""
        return int(self.rate * self.window)


class Pace:
    """One request's bytes in its current window."""

    __slots__ = ("n", "t")

    def __init__(self, now: float) -> None:
        self.t = now  # when the window began
        self.n = 0  # bytes since

    def add(self, n: int) -> None:
        self.n += n

    def slow(self, now: float, m: MinRate) -> bool:
        """Whether the window that just ended brought less than its floor
        (False while it runs, and always when the rule is off); a window that
        did starts the next."""
        if m.rate <= 0 or now - self.t < m.window:
            return False
        if self.n < m.floor:
            return True
        self.t, self.n = now, 0
        return False

    def error(self, authority: str, host: str, m: MinRate) -> ReadTimeoutError:
        return ReadTimeoutError(f"{authority} sent {self.n} bytes in {m.window:g} s (under {m.rate:g} bytes/s)",
                                code="response-timeout", host=host)
