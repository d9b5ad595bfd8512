"""The connection-count controller and the range sizer, without sockets: a
fake clock and links modelled by their throughput at each connection count."""

from __future__ import annotations

from collections.abc import Callable

from qwenhome.transfer.controller import Controller, State, Steps, initial_connections
from qwenhome.transfer.sizing import MiB, RangeSizer, Sizes


def _controller_at(connections: int) -> Controller:
    """A controller whose first window has begun at ``connections``: what the
    supervisor has once the first bytes came."""
    c = Controller(Steps(), RangeSizer())
    c.begin(connections)
    c.observe(0.0, 1, 0.0, connections, loops=2)
    assert c.state is State.WIDENING
    return c


def _drive(c: Controller, rate_of: Callable[[int], float], seconds: float, *,
           saturated: bool = False) -> list[tuple[State, int]]:
    """Tick every 0.1 s (the supervisor's pace) for ``seconds``, every
    connection busy, two event loops each waiting half the time (never, when
    ``saturated``). Returns the (state, target) path."""
    now, received, waited = 0.0, 0, 0.0
    path = [(c.state, c.target)]
    for _ in range(round(seconds / 0.1)):
        now += 0.1
        received += int(rate_of(c.target) * 0.1)
        waited += 0.0 if saturated else 0.1
        c.observe(now, received, waited, c.target, loops=2)
        if path[-1] != (c.state, c.target):
            path.append((c.state, c.target))
    return path


def test_a_link_that_caps_each_connection_is_widened_to_the_most() -> None:
    """20 MB/s per connection from a fast server: every step doubles the
    rate, so the count widens (8x while few, then 2x) up to max_connections."""
    c = Controller(Steps(), RangeSizer())
    c.begin(4)
    path = _drive(c, lambda n: n * 20e6, 3.0)
    assert path == [(State.STARTING, 4), (State.WIDENING, 4), (State.TRIAL, 32), (State.TRIAL, 64),
                    (State.TRIAL, 128), (State.HOLDING, 128)], path


def test_a_link_capped_in_total_goes_back_to_the_count_that_filled_it() -> None:
    """200 MB/s in all, 20 MB/s per connection: 32 fill it, 64 add nothing, so
    the step is undone; the server (or the link), not the count, is the limit
    and the controller stops there."""
    c = Controller(Steps(), RangeSizer())
    c.begin(4)
    path = _drive(c, lambda n: min(200e6, n * 20e6), 3.0)
    assert [t for _, t in path] == [4, 4, 32, 64, 32], path
    assert c.state is State.SERVER_BOUND and c.target == 32


def test_a_server_that_pays_per_connection_is_narrowed_with_long_ranges() -> None:
    """A server whose throughput falls beyond 16 connections (160 MB/s at 16,
    less with more): the wider step costs, the count halves while the rate
    holds, and ranges grow long (each request costs such a server)."""
    c = Controller(Steps(), RangeSizer())
    c.begin(32)
    path = _drive(c, lambda n: 160e6 if n <= 16 else 160e6 * 16 / n, 4.0)
    assert path == [(State.STARTING, 32), (State.WIDENING, 32), (State.TRIAL, 64), (State.NARROWING, 16),
                    (State.SERVER_BOUND, 16)], path
    assert c.sizer.chunk > Sizes().chunk_max, c.sizer.chunk


def test_a_machine_that_is_the_limit_gets_no_step() -> None:
    """The event loops never wait: more connections would only cost CPU."""
    c = Controller(Steps(), RangeSizer())
    c.begin(8)
    path = _drive(c, lambda n: n * 20e6, 3.0, saturated=True)
    assert c.target == 8 and [t for _, t in path] == [8, 8], path
    assert c.state is State.WIDENING


def test_a_fixed_count_never_changes() -> None:
    sizer = RangeSizer()
    c = Controller(Steps(), sizer, fixed=6)
    chunk = sizer.chunk
    path = _drive(c, lambda n: n * 20e6, 3.0)
    assert path == [(State.FIXED, 6)] and sizer.chunk == chunk


def test_the_first_window_is_short_and_a_new_count_is_measured_once_settled() -> None:
    """The first window is half a probe interval; after a step, the window
    starts only once the ranges beyond a lowered target have ended."""
    steps = Steps()
    c = _controller_at(32)
    assert c.window() == steps.probe_interval * 0.5
    assert not c.observe(0.05, 1 + 5_000_000, 0.05, 32, loops=2), "the window is not over"
    assert c.observe(0.1, 1 + 10_000_000, 0.1, 32, loops=2), "100 MB/s over 32: capped, so wider"
    assert c.state is State.TRIAL and c.target == 64
    c.observe(0.2, 20_000_000, 0.2, 64, loops=2)  # the new count's window starts now
    c.observe(0.4, 39_000_000, 0.4, 64, loops=2)  # 95 MB/s in the 64's own window: no gain
    assert c.state is State.SERVER_BOUND and c.target == 32, "64 did not pay: back"
    # A halving: its window waits for the ranges beyond the new target.
    c = _controller_at(32)
    c.observe(0.1, 1 + 15_000_000, 0.1, 32, loops=2)  # 150 MB/s: on to 64
    c.observe(0.2, 20_000_000, 0.2, 64, loops=2)
    c.observe(0.4, 40_000_000, 0.4, 64, loops=2)  # 100 MB/s: it cost, so down to 16
    assert c.state is State.NARROWING and c.target == 16
    for t in (1.0, 5.0, 10.0):
        assert not c.observe(t, 40_000_001, 10.0, 32, loops=2), "32 ranges still under way"
    assert c.state is State.NARROWING
    c.observe(10.1, 50_000_000, 10.1, 16, loops=2)  # settled: the 16's window starts
    assert c.window() == 3 * steps.probe_interval
    c.observe(10.5, 80_000_000, 10.5, 16, loops=2)
    assert c.state is State.NARROWING, "a halving is measured over three intervals"
    c.observe(10.8, 100_000_000, 10.8, 16, loops=2)  # 71 MB/s against 150: the halving cost
    assert c.state is State.SERVER_BOUND and c.target == 32


def test_a_pull_starts_with_a_connection_per_8_mib_within_bounds() -> None:
    steps = Steps()
    assert initial_connections(steps, 10 * MiB, 1) == 4
    assert initial_connections(steps, 100 * MiB, 1) == 12
    assert initial_connections(steps, 10_000 * MiB, 1) == 32
    assert initial_connections(steps, 10 * MiB, 200) == 32, "many files: many round trips at once"


# -- the controller's rules, one window at a time (ported from the engine's _tune tests) ----------

def test_controller_takes_no_step_while_the_loop_never_waits() -> None:
    """A saturated event loop means this machine is the limit: the controller
    keeps the connection count; otherwise a capped link widens it."""
    c = _controller_at(16)
    c.judge(160e6, 16, saturated=True)
    assert (c.adaptive, c.baseline, c.base_target) == (True, 0.0, 16)
    assert c.target == 16
    c.judge(160e6, 16, saturated=False)
    assert c.adaptive and c.base_target == 16 and c.target > 16  # 10 MB/s per connection: capped, so it widens


def test_a_widening_that_costs_throughput_steps_down_while_fewer_keep_the_rate() -> None:
    """A server that pays per connection (a Python one near its CPU limit)
    serves less when more connections ask: the controller then halves the
    count while the rate holds, and steps back up once a halving costs."""
    c = _controller_at(32)
    sizer = c.sizer
    c.judge(150e6, 32)  # 4.7 MB/s per connection: capped, so it widens
    assert c.adaptive and (c.baseline, c.base_target, c.target) == (150e6, 32, 64)
    # While the step is on trial, ranges last about two windows (here 2 MB),
    # so that if it fails the extra connections end soon.
    sizer.carved = 64
    assert sizer.next_size(1 << 30, c.target) <= 2 * 4.7e6 * Steps().probe_interval < sizer.chunk
    chunk = sizer.chunk
    # 64 serve less than 32 did: not back to 32 but down to 16, and each
    # request costs such a server: the ranges grow long.
    c.judge(100e6, 32)
    assert c.adaptive and (c.baseline, c.base_target, c.target) == (150e6, 32, 16)
    assert sizer.chunk > max(chunk, Sizes().chunk_max), (sizer.chunk, chunk)
    # 16 serve more, at 10 MB/s each: no more than a capped link allows, so
    # fewer could at best keep the rate (behind 20 MB/s per connection, 8
    # hold 160 MB/s whatever the server could do). The stepping ends here.
    c.judge(160e6, 32)
    assert not c.adaptive and c.target == 16
    # Had 16 merely come close (within the noise that keeps an uncapped
    # step), the halving is undone.
    c = _controller_at(32)
    c.judge(150e6, 32)  # on to 64
    c.judge(100e6, 32)  # down to 16
    c.judge(145e6, 32)
    assert not c.adaptive and c.target == 32

    # Connections that each move more than a capped link would: the server
    # is the limit, and the halving goes on while the rate holds.
    c = _controller_at(32)
    c.judge(2.0e9, 32)
    assert c.adaptive and c.target == 64
    c.judge(1.5e9, 32)
    assert c.adaptive and c.target == 16
    c.judge(1.9e9, 32)  # 16 keep it: on to 8 (the floor)
    assert c.adaptive and (c.baseline, c.base_target, c.target) == (2.0e9, 16, 8)
    c.judge(1.3e9, 32)  # 8 cost a third: back to 16, and the end
    assert not c.adaptive and c.target == 16

    # A widening that merely did not pay (the machine, not the server, is
    # the limit) goes back to where it was.
    c = _controller_at(32)
    c.judge(500e6, 32)
    assert c.target == 64
    assert c.judge(520e6, 32) is False and not c.adaptive and c.target == 32
    # At this rate the hash, which can only follow the written prefix, is the
    # bottleneck: ranges stay short (long ones would hold the prefix back).
    assert c.sizer.chunk <= Sizes().in_flight // 32, c.sizer.chunk

    # On a slow link (100 KB/s per connection) the trial bound is the
    # smallest range, not none at all.
    c = _controller_at(32)
    c.judge(3.2e6, 32)
    c.sizer.carved = 64
    assert c.target == 64 and c.sizer.next_size(1 << 30, c.target) == Sizes().tail_min

    # A step that gained clearly, if not enough to go on, is kept: going back
    # would give the gain up (own server at 20 MB/s per connection: 32 moved
    # 377 MB/s, 64 moved 473).
    c = _controller_at(32)
    c.judge(377e6, 32)
    assert c.target == 64
    c.judge(473e6, 32)
    assert not c.adaptive and c.target == 64
    # A step that cost throughput goes back, but not below a count already
    # measured to serve less: 32 moved 410, 64 535, 128 465: back to 64.
    c = _controller_at(32)
    c.judge(410e6, 32)
    c.judge(535e6, 64)  # the wider count at work
    assert c.adaptive and c.target == 128
    c.judge(465e6, 64)
    assert not c.adaptive and c.target == 64

    # A saturated machine takes no step at all: ranges keep their size.
    c = _controller_at(32)
    c.judge(600e6, 32, saturated=True)
    assert c.target == 32 and c.sizer.chunk <= Sizes().chunk_max


def test_ranges_last_many_request_round_trips_once_one_is_measured() -> None:
    """Without a measured round trip the in-flight bound rules; with one (100 ms
    here), a range lasts many."""
    sizes = Sizes()
    sizer = RangeSizer(sizes)
    sizer.resize(10e6, 32, server_bound=False)  # no round trip measured yet: 64 MiB in flight over 32
    assert sizer.chunk == sizes.in_flight // 32
    sizer.note_ttfb(0.1)
    sizer.resize(10e6, 32, server_bound=False)  # 10 MB/s for 16 round trips of 100 ms
    assert 10e6 * sizes.request_ranges * 0.1 - 64 * 1024 < sizer.chunk <= sizes.chunk_max, sizer.chunk


def test_the_last_wave_of_long_ranges_ends_in_stages() -> None:
    """Ranges that all end together hold the written prefix (and the hash)
    back to the last byte; the last wave of long ranges is handed out in half
    shares instead, so it ends in stages the hash takes one by one, down to
    the ranges the in-flight bound allows."""
    sizes = Sizes()
    sizer = RangeSizer(sizes)
    sizer.carved, sizer.chunk = 16, 48 << 20  # long ranges, first wave over
    left = (1000 << 20) - (440 << 20)  # 560 MiB left, 16 connections free
    share = (560 << 20) // 16
    assert share // 2 - (1 << 20) <= sizer.next_size(left, 16) <= share // 2, sizer.next_size(left, 16)
    left = (1000 << 20) - ((1000 - 96) << 20)  # 6 MiB each: the smallest stage is in_flight over 16
    assert sizer.next_size(left, 16) == sizes.in_flight // 16


def test_the_first_wave_grows_from_small_to_the_tuned_size() -> None:
    sizer = RangeSizer(Sizes(chunk_min=8 * MiB, chunk_max=8 * MiB))
    wave = [sizer.next_size(1 << 30, 8) for _ in range(10)]
    assert wave[:8] == sorted(wave[:8]) and wave[0] == 1 * MiB and wave[7] == 8 * MiB, wave
    assert wave[8:] == [8 * MiB, 8 * MiB]
