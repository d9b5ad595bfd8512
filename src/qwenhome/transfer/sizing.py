"""How long the next range is: the controller's tuned size, a first wave that
grows from small, a bound while a wider step is on trial, and the end of a
run shared out so that the connections end together, in stages.

Pure arithmetic; callers hold the run's lock.
"""

from __future__ import annotations

from dataclasses import dataclass

KiB = 1 << 10
MiB = 1 << 20


def aligned(n: int) -> int:
    """``n`` rounded down to 64 KiB: range bounds stay on page and block edges."""
    return n - n % (64 * KiB)


@dataclass(frozen=True)
class Sizes:
    """Range sizes. Each number's story is in docs/architecture.md."""

    chunk_min: int = 2 * MiB  # shorter ranges cost a request each for little body
    chunk_max: int = 16 * MiB  # longer ones hold the written prefix (and the hash) back
    range_time: float = 0.5  # seconds a range lasts at a connection's measured rate
    # About this much under way: the hash follows the written prefix, which lags
    # the bytes received by what is in flight (256 MiB took 9% longer than 64).
    in_flight: int = 64 * MiB
    # A range lasts at least this many request round trips: behind latency the
    # gap between a connection's ranges is bytes not moved.
    request_ranges: float = 16.0
    # Once a wider step cost throughput the server pays per request: ranges
    # last this long (a Python server serves 64 MiB ranges 20% faster than 16),
    long_range_time: float = 4.0
    long_chunk_max: int = 64 * MiB  # up to this size,
    long_in_flight: int = 1024 * MiB  # with this much under way,
    long_max_rate: float = 400e6  # while the pull moves less (faster, the hash must follow closely)
    tail_min: int = 1 * MiB  # the smallest range the end of a run (or a trial) is cut into


class RangeSizer:
    """The size of the next range. ``chunk`` is the tuned size (the controller
    sets it from the measured rate), ``trial`` a bound while a wider step is on
    trial (0: none), ``ttfb`` the measured request round trip."""

    def __init__(self, sizes: Sizes = Sizes()) -> None:
        self.sizes = sizes
        self.chunk = min(sizes.chunk_max, sizes.chunk_min * 2)
        self.trial = 0
        self.ttfb = 0.0  # seconds from a reused connection's request to its answer's first byte
        self.carved = 0  # ranges handed out so far, while fewer than the connections (the first wave)

    def resize(self, per_conn: float, connections: int, server_bound: bool) -> None:
        """The tuned size: about ``range_time`` of a connection's rate, with
        the bytes in flight near ``in_flight``, but at least ``request_ranges``
        round trips long. When the server is the limit (``server_bound``) and
        the pull moves under ``long_max_rate``, ranges last ``long_range_time``
        and may be larger, nearer aria2's one piece per connection (on a fast
        server a failed step means the machine is the limit, and long ranges
        there left 300 MB to hash after the last byte)."""
        s = self.sizes
        long = server_bound and per_conn * connections < s.long_max_rate
        seconds = s.long_range_time if long else s.range_time
        in_flight = s.long_in_flight if long else s.in_flight
        want = min(per_conn * seconds, in_flight / max(1, connections))
        floor = max(s.chunk_min, per_conn * s.request_ranges * self.ttfb)
        chunk = min(s.long_chunk_max if long else s.chunk_max, max(floor, want))
        self.chunk = aligned(int(chunk))

    def begin_trial(self, per_conn: float, window: float) -> None:
        """A wider step is on trial: ranges last about two of its measuring
        windows, so that if it fails the connections beyond the old count end
        soon instead of holding a server that pays for each (at least the
        smallest range: below ~160 KB/s per connection the bound was 0)."""
        self.trial = max(self.sizes.tail_min, aligned(int(per_conn * window * 2)))

    def note_ttfb(self, seconds: float) -> None:
        """A reused connection's request took ``seconds`` to its first answer
        byte (a running average; loops call it without the lock, and a lost
        update between two of them costs nothing)."""
        self.ttfb = seconds if self.ttfb == 0.0 else self.ttfb + 0.1 * (seconds - self.ttfb)

    def next_size(self, left: int, connections: int) -> int:
        """The next range's size, with ``left`` bytes of the run not yet on
        disk (those under way included) over ``connections``. The first wave
        grows from small to full, so the written prefix (and the hash) move
        at once instead of the whole wave landing together. Near the end the
        bytes left are shared over every connection so that they end
        together (as aria2 splits); a share counts the bytes under way, or
        it would shrink with every range (a hundred small requests in a GB's
        last quarter, each costing a Python server a MB of body's CPU)."""
        s = self.sizes
        share = left // max(1, connections)
        chunk = self.chunk
        if self.carved < connections:
            chunk = chunk * (self.carved + 1) // connections
            self.carved += 1
        if self.trial:
            chunk = min(chunk, self.trial)
        chunk = max(s.tail_min, aligned(chunk))
        if share >= chunk:
            return chunk
        # Ranges that all end together hold the written prefix back until the
        # end, and the hash then starts on the whole last wave after the last
        # byte (1 GB in 50 MiB ranges over 16 connections: 550 MB, 0.4 s).
        # Half shares end the wave in stages, down to what in_flight allows.
        floor = max(s.tail_min, s.in_flight // max(1, connections))
        if share > floor:
            share = max(floor, share // 2)
        return max(s.tail_min, aligned(share))
