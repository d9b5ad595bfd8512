"""The scheduler without sockets: items with real partial files, a fake
clock, and spans moved by hand as a connection would move them."""

from __future__ import annotations

from pathlib import Path

from qwenhome.config import Source
from qwenhome.transfer.scheduler import Scheduler, Splits
from qwenhome.transfer.sizing import MiB, RangeSizer, Sizes
from qwenhome.transfer.work import Candidate, Destination, Item, Span

SOURCE = Source("test", "hf", "http://127.0.0.1:9")


def _item(tmp_path: Path, name: str, size: int) -> Item:
    return Item(name=name, size=size, candidates=[Candidate(SOURCE, f"http://127.0.0.1:9/{name}")],
                dest=Destination(tmp_path / f"{name}.part"), answered=True)


def _scheduler(connections: int = 4, chunk: int = 4 * MiB, left: int = 1 << 40,
               splits: Splits = Splits()) -> Scheduler:
    sizer = RangeSizer(Sizes(chunk_min=chunk, chunk_max=chunk, tail_min=256 * 1024))
    sizer.carved = connections  # the first wave is over: every span is the tuned size
    sizer.chunk = chunk
    return Scheduler(sizer, splits, connections=lambda: connections, left=lambda: left)


def _receive(span: Span, n: int) -> None:
    """``n`` bytes of ``span`` landed (what the run records)."""
    span.item.done.add(span.cur, span.cur + n)
    span.cur += n


def test_largest_first_and_every_other_span_to_the_smallest(tmp_path: Path) -> None:
    sched = _scheduler()
    big, mid, small = _item(tmp_path, "big", 40 * MiB), _item(tmp_path, "mid", 8 * MiB), _item(tmp_path, "s", 1000)
    sched.add([small, big, mid])
    assert list(sched.fast) == [big, mid, small]
    spans = [sched.next_span(0.0, slow=False) for _ in range(4)]
    assert [s.item.name for s in spans if s] == ["s", "big", "mid", "big"]
    assert [(s.start, s.end) for s in spans if s and s.item is big] == [(0, 4 * MiB), (4 * MiB, 8 * MiB)]
    assert small.dest.fd >= 0 and small.started, "a cut item is opened (pre-sized) and started"
    assert (tmp_path / "big.part").stat().st_size == 40 * MiB
    for item in (big, mid, small):
        item.dest.close()


def test_an_item_gets_one_span_until_its_first_answer(tmp_path: Path) -> None:
    """A resolve that redirects is asked once, not once per connection."""
    sched = _scheduler()
    item = _item(tmp_path, "a", 40 * MiB)
    item.answered = False
    sched.add([item])
    first = sched.next_span(0.0, slow=False)
    assert first is not None and sched.next_span(0.0, slow=False) is None
    item.answered = True
    assert sched.next_span(0.0, slow=False) is not None
    item.dest.close()


def test_an_item_backing_off_waits_and_others_go_first(tmp_path: Path) -> None:
    sched = _scheduler()
    a, b = _item(tmp_path, "a", 40 * MiB), _item(tmp_path, "b", 20 * MiB)
    sched.add([a, b])
    a.ready_at = 5.0
    got = [s.item.name for s in (sched.next_span(1.0, slow=False) for _ in range(3)) if s]
    assert got == ["b", "b", "b"]
    assert sched.fast[0] is a, "skipped, not lost"
    span = sched.next_span(5.0, slow=False)
    assert span is not None and span.item is a
    for item in (a, b):
        item.dest.close()


def test_the_tail_of_an_item_is_not_left_as_a_tiny_span(tmp_path: Path) -> None:
    sched = _scheduler(chunk=4 * MiB)
    item = _item(tmp_path, "a", 4 * MiB + 100_000)
    sched.add([item])
    span = sched.next_span(0.0, slow=False)
    assert span is not None and (span.start, span.end) == (0, item.size)
    assert sched.next_span(0.0, slow=False) is None
    item.dest.close()


def test_the_end_of_a_run_is_shared_over_the_connections(tmp_path: Path) -> None:
    """With 6 MiB left over 4 connections, spans are shares, not full 16 MiB."""
    sched = _scheduler(connections=4, chunk=16 * MiB, left=6 * MiB)
    item = _item(tmp_path, "a", 64 * MiB)
    sched.add([item])
    span = sched.next_span(0.0, slow=False)
    assert span is not None and span.end - span.start == 1536 * 1024
    item.dest.close()


def test_a_span_holding_the_prefix_far_behind_is_split(tmp_path: Path) -> None:
    """The hash can only follow the written prefix: once ``hash_lag`` lies
    past the span that holds it, that span's second half goes to the next
    connection before any new bytes."""
    sched = _scheduler(chunk=8 * MiB, splits=Splits(steal_min=1 * MiB, hash_lag=16 * MiB))
    item = _item(tmp_path, "a", 64 * MiB)
    sched.add([item])
    spans = [sched.next_span(0.0, slow=False) for _ in range(4)]
    first = spans[0]
    assert first is not None
    _receive(first, 1 * MiB)
    for s in spans[1:3]:
        assert s is not None
        _receive(s, s.end - s.start)
    assert sched.next_span(0.1, slow=False).start == 32 * MiB, "too young to split"  # type: ignore[union-attr]
    boost = sched.next_span(0.5, slow=False)
    assert boost is not None and boost.item is item
    assert (boost.start, boost.end) == (1 * MiB + 3.5 * MiB, 8 * MiB) and first.end == boost.start
    item.dest.close()


def test_the_end_game_splits_only_an_outlier(tmp_path: Path) -> None:
    """Nothing left to hand out: a span much slower than the typical one is
    split; uniform slowness (a per-connection cap) is left alone."""
    sched = _scheduler(chunk=16 * MiB, splits=Splits(steal_min=1 * MiB, hash_lag=1 << 40))
    item = _item(tmp_path, "a", 64 * MiB)
    sched.add([item])
    spans = [sched.next_span(0.0, slow=False) for _ in range(4)]
    assert sched.next_span(0.0, slow=False) is None, "all handed out"
    for s in spans:
        assert s is not None
        _receive(s, 4 * MiB)  # uniform: 4 MiB each in 2 s
    assert sched.next_span(2.0, slow=False) is None
    slow = spans[3]
    assert slow is not None
    slow.t0 = 0.0
    slow.start = slow.cur - 100_000  # (as if it had moved only 100 KB)
    stolen = sched.next_span(2.0, slow=False)
    assert stolen is not None and stolen.start > slow.cur and slow.end == stolen.start
    item.dest.close()


def test_the_end_game_splits_the_span_the_hash_waits_on(tmp_path: Path) -> None:
    """Nothing left to hand out, no outlier: once more was received past the
    written prefix than the run has left to receive, the span holding the
    prefix is split (else it lands with the last wave and the hash starts on
    everything past it after the last byte); before that, it is left alone."""
    left = [1 << 40]
    sizer = RangeSizer(Sizes(chunk_min=16 * MiB, chunk_max=16 * MiB, tail_min=256 * 1024))
    sizer.carved, sizer.chunk, sizer.ttfb = 4, 16 * MiB, 0.02
    sched = Scheduler(sizer, Splits(steal_min=1 * MiB, hash_lag=1 << 40), connections=lambda: 4,
                      left=lambda: left[0])
    item = _item(tmp_path, "a", 64 * MiB)
    sched.add([item])
    spans = [sched.next_span(0.0, slow=False) for _ in range(4)]
    first = spans[0]
    assert first is not None and sched.next_span(0.0, slow=False) is None, "all handed out"
    left[0] = 40 * MiB
    _receive(first, 8 * MiB)  # the prefix's span: 8 MiB in 2 s, as the last span
    for s in spans[1:3]:
        assert s is not None
        _receive(s, 16 * MiB)
        sched.drop(s)
    assert spans[3] is not None
    _receive(spans[3], 8 * MiB)  # 40 MiB past the prefix
    assert sched.next_span(2.0, slow=False) is None, "40 MiB still to come: the prefix may catch up"
    left[0] = 24 * MiB
    split = sched.next_span(2.0, slow=False)
    assert split is not None and (split.start, split.end) == (12 * MiB, 16 * MiB) and first.end == 12 * MiB
    item.dest.close()


def test_drop_requeues_what_a_span_left_and_restart_takes_the_whole_item(tmp_path: Path) -> None:
    sched = _scheduler()
    item = _item(tmp_path, "a", 40 * MiB)
    sched.add([item])
    spans = [sched.next_span(0.0, slow=False) for _ in range(10)]
    assert sum(1 for s in spans if s) == 10 and sched.next_span(0.0, slow=False) is None
    assert not item.queued, "carved to its end: off the queue"
    cut = spans[0]
    assert cut is not None
    _receive(cut, 1 * MiB)
    sched.drop(cut)
    assert item.queued and cut not in sched.inflight
    again = sched.next_span(0.0, slow=False)
    assert again is not None and (again.start, again.end) == (1 * MiB, 4 * MiB)
    item.gen += 1  # (the answer was a whole 200: the item's bytes are void)
    item.done.clear()
    sched.restart(again)
    assert item.inflight == [again] and sched.inflight == {again}
    assert (again.start, again.cur, again.end, again.current) == (0, 0, item.size, True)
    sched.cancel(item)
    assert not sched.inflight and not again.current
    item.dest.close()


def test_an_item_handed_to_the_threads_moves_queue(tmp_path: Path) -> None:
    woken: list[int] = []
    sched = _scheduler()
    sched = Scheduler(sched.sizer, connections=lambda: 4, left=lambda: 1 << 40, wake=lambda: woken.append(1))
    a, b = _item(tmp_path, "a", 40 * MiB), _item(tmp_path, "b", 20 * MiB)
    sched.add([a, b])
    assert sched.make_slow(a) and not sched.make_slow(a)
    assert list(sched.fast) == [b] and list(sched.slow) == [a] and woken == [1]
    span = sched.next_span(0.0, slow=True)
    assert span is not None and span.item is a
    assert all(s.item is b for s in (sched.next_span(0.0, slow=False) for _ in range(3)) if s)
    for item in (a, b):
        item.dest.close()


class _Shared(Item):
    """An item whose spans count against a share (as a Xet file's plain spans do)."""

    def share(self) -> str:
        return "plain"


def test_a_share_gets_no_more_spans_than_its_quota_and_its_freed_ones_go_back_to_it(tmp_path: Path) -> None:
    """A Xet file's plain spans and its xorb ranges each have half the
    connections: a full share is skipped (not dropped), others go meanwhile."""
    sched = _scheduler(connections=8)
    sched.quota = lambda share: 2 if share == "plain" else None
    shared = _Shared(name="shared", size=64 * MiB, candidates=[Candidate(SOURCE, "http://127.0.0.1:9/s")],
                     dest=Destination(tmp_path / "s.part"), answered=True)
    other = _item(tmp_path, "other", 40 * MiB)
    sched.add([shared, other])
    got = [sched.next_span(0.0, slow=False) for _ in range(6)]
    mine = [s for s in got if s is not None and s.item is shared]
    assert len(mine) == 2 and sched.shares == {"plain": 2}
    assert all(s is not None for s in got), "the other item took the rest"
    sched.drop(mine[0])  # cut short: its bytes are handed out again, to its own share
    assert sched.shares == {"plain": 1}
    again = sched.next_span(0.0, slow=False)
    again = again if again is not None and again.item is shared else sched.next_span(0.0, slow=False)
    assert again is not None and again.item is shared and sched.shares == {"plain": 2}
    sched.cancel(shared)
    assert sched.shares == {"plain": 0}
    for item in (shared, other):
        item.dest.close()
