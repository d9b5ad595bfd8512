"""What the I/O loops and worker threads may ask of the run they serve.

They move bytes; the run (:class:`.run.Run`) decides everything else. Every
method takes the run's lock itself unless it says otherwise, so a loop holds
no lock of the run's while it waits on a socket.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from .pace import MinRate
from .work import Item, Span

if TYPE_CHECKING:
    from ..net import HttpClient


class Port(Protocol):
    http: HttpClient  # the client's settings: proxies, TLS context, timeouts, user agent
    clock: Callable[[], float]
    stall_timeout: float  # seconds a body may stay silent
    min_rate: MinRate  # the least a request must bring over a window (pace.py)
    splice: bool  # plain-HTTP bodies may go socket → file in the kernel

    @property
    def stopped(self) -> bool:
        """The run ended or failed (read without the lock: a hint between buffers)."""

    # -- work ----------------------------------------------------------------------
    def next_span(self, wid: int) -> Span | None:
        """Worker thread ``wid``'s next span; waits for one. None: stop."""

    def loop_work(self, index: int, count: int, busy: int) -> tuple[list[Span], int] | None:
        """Event loop ``index`` of ``count``, with ``busy`` connections under
        way: the spans to start and its share of the connection target. Waits
        briefly when it has nothing at all to do. None: stop."""

    def span_done(self, span: Span, index: int, count: int, busy: int, more: bool) -> Span | None:
        """A loop's span ended; with ``more``, its connection may take the
        next span at once (returned) while the loop is under its share."""

    def drop(self, span: Span) -> None:
        """``span`` ended, done or not: what it left is handed out again."""

    # -- bytes -----------------------------------------------------------------------
    def bounds(self, span: Span) -> tuple[bool, int, int]:
        """Whether ``span`` is still wanted, and its (cur, end)."""

    def record(self, span: Span, pos: int, n: int, *, queue_hash: bool) -> tuple[bool, int, int] | None:
        """``n`` bytes of ``span`` are written at ``pos``: (the caller holds
        the item's hash claim, cur, end), or None when the span is stale. With
        ``queue_hash`` a claim goes to the hash threads instead."""

    def hash_claimed(self, item: Item) -> None:
        """Hash ``item`` in this thread (the caller holds its claim), and finish it when whole."""

    def hash_behind(self) -> bool:
        """The hash is far behind: the loops give it the CPU first."""

    def note_ttfb(self, seconds: float) -> None:
        """A reused connection waited ``seconds`` for its answer's first byte (no lock)."""

    # -- answers ---------------------------------------------------------------------
    def answered(self, item: Item) -> None:
        """``item``'s first answer came: its other spans may start."""

    def redirected(self, span: Span, url: str, direct: bool) -> None:
        """``span`` was redirected to ``url`` (reachable by the loops when ``direct``)."""

    def restart(self, span: Span, no_ranges: bool) -> None:
        """A whole-item answer came for ``span``: the item starts again on it."""

    def to_threads(self, span: Span) -> None:
        """The loop cannot serve ``span``'s item: the worker threads take it."""

    def no_splice(self, span: Span) -> None:
        """This filesystem refuses splice: the threads take every item."""

    def failed(self, span: Span, exc: BaseException) -> None:
        """``span`` failed with ``exc``: back off, move to another source, or end the run."""

    def abort(self, exc: BaseException) -> None:
        """End the run with ``exc`` (the first such error wins)."""
