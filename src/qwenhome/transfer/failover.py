"""The verdicts on a failed span: back off and retry, or move the item to
its next candidate source. Pure code on an item's fields; callers hold the
run's lock and pass the clock's reading."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from ..errors import QwenhomeError
from .retry import Backoff
from .sizing import MiB
from .work import Item, Span

# A failed span that moved this much still counts as progress: a cut line,
# not a dead source (a source that sends a little of every body and then
# stalls must still be left after max_retries rounds).
PROGRESS_MIN = 4 * MiB
# Refetches of a file whose bytes failed verification when no other source
# has it (with another source, the one that served them is left at once).
MAX_INTEGRITY_RETRIES = 2


@dataclass(frozen=True)
class Retries:
    max_retries: int = 8  # rounds of failed spans in a row before an item moves on
    backoff: Backoff = Backoff()


def retry_delay(item: Item, span: Span, exc: QwenhomeError, now: float, retries: Retries) -> float | None:
    """A transient failure of ``span``: the back-off before ``item`` is handed
    out again, or None when it has failed ``max_retries`` rounds in a row.
    Failures count in rounds: when a blip cuts every connection at once, its
    spans all started before it (their ``tries`` is the count then)."""
    if span.cur - span.start >= PROGRESS_MIN:
        item.failures = 0
    if span.tries >= item.failures:
        item.failures += 1
    if item.failures > retries.max_retries:
        return None
    ra = exc.context.get("retry_after")
    delay = retries.backoff.delay(item.failures, ra if isinstance(ra, float | int) else None)
    item.ready_at = now + delay
    return delay


def next_candidate(item: Item, bad_sources: Collection[str]) -> bool:
    """Move ``item`` to its next candidate whose source is not known bad;
    False when none is left. Either way its failure count and what it learnt
    of its source (redirect target, validator, back-off) are forgotten."""
    item.failures = 0
    item.direct_url = None
    item.validator = None
    item.ready_at = 0.0
    nxt = item.cand + 1
    while nxt < len(item.candidates) and item.candidates[nxt].source.name in bad_sources:
        nxt += 1
    if nxt >= len(item.candidates):
        return False
    item.cand = nxt
    return True
