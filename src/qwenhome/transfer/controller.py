"""The connection-count controller: a state machine fed the bytes received.

The run's supervisor calls :meth:`Controller.observe` on every tick with the
clock, the bytes received so far, the seconds the event loops spent waiting
for their sockets and the ranges under way. The controller cuts that stream
into measuring windows and judges each one::

    STARTING --first bytes--> WIDENING --a baseline--> TRIAL --the step paid--> TRIAL (one step wider)
                               ^     |                   |
               the loops never +-----+                   +--kept a 10% gain, work ran short--> HOLDING
               waited: no step                           |
                                                         +--did not pay: back--+--it cost--> NARROWING
                                                                               +--otherwise--> SERVER_BOUND
    NARROWING --a halving kept the rate--> NARROWING (half again) --lost it, or at the floor--> SERVER_BOUND

A user's fixed count is FIXED: no window is judged. Each transition's rule is
in :meth:`Controller.judge`; docs/architecture.md tells the measurements
behind every number. Pure code: the caller passes the clock's readings and
holds the run's lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .sizing import MiB, RangeSizer


class State(Enum):
    FIXED = "fixed"  # the user set the count: it never changes
    STARTING = "starting"  # no byte yet: connection set-up is not a fair measure
    WIDENING = "widening"  # measuring a baseline at this count (no step on trial)
    TRIAL = "trial"  # measuring the last step (wider, or none when connections waited) against the baseline
    NARROWING = "narrowing"  # measuring a halving: the server pays for each connection
    HOLDING = "holding"  # done: the count stays (widening stopped paying, or work ran short)
    SERVER_BOUND = "server-bound"  # done: a wider step cost throughput; ranges grow long


@dataclass(frozen=True)
class Steps:
    """The controller's numbers. Each one's story is in docs/architecture.md."""

    initial_connections: int = 4  # the fewest a pull starts with
    initial_bytes: int = 8 * MiB  # a connection per this many bytes to fetch at the start (as hf_transfer splits)
    initial_max: int = 32  # at most this many at the start (64 cost an uncapped server more than they gained)
    max_connections: int = 128  # the most the controller widens to
    slow_connection: float = 40e6  # bytes/s; below this a connection looks capped (as CDNs cap)
    step_gain: float = 1.25  # a widening goes on when throughput grew this much (runs vary 10-20% here),
    step_gain_capped: float = 1.3  # or this much when each connection looks capped
    step_keep: float = 1.1  # a step that gained this much, if less than that, is kept and the widening ends
    narrow_keep: float = 0.9  # a step that kept this fraction of the rate is kept (the server was the limit)
    narrow_min: int = 8  # the fewest connections a halving goes down to
    probe_interval: float = 0.2  # seconds of a measuring window (half for the first, three times for a halving)


def initial_connections(steps: Steps, todo: int, files: int) -> int:
    """The count a pull starts with: a connection per ``initial_bytes`` to
    fetch, and many for many files (whose requests each wait a round trip).
    Growing from a few costs a measuring window per step, at every pull's start."""
    want = max(todo // steps.initial_bytes, steps.initial_max if files >= 64 else 0)
    return min(steps.max_connections, steps.initial_max, max(steps.initial_connections, want))


class Controller:
    """The connection target of one run, and the range size that goes with it
    (through ``sizer``)."""

    def __init__(self, steps: Steps, sizer: RangeSizer, *, fixed: int = 0) -> None:
        self.steps = steps
        self.sizer = sizer
        self.state = State.FIXED if fixed else State.STARTING
        self.target = fixed or steps.initial_connections
        self.baseline = 0.0  # the rate the window being measured is judged against (0: none yet)
        self.base_target = self.target  # the count that baseline was measured at
        self.rates: dict[int, float] = {}  # the rate last measured at each count
        # The window: when it started, the bytes and loop waits at that moment.
        self._window_t = 0.0
        self._window_bytes = 0
        self._window_waited = 0.0
        self._started = False  # the first bytes came: windows may start
        self._settling = False  # the count just changed: the window starts once that settles

    def begin(self, connections: int) -> None:
        """Start (an adaptive run) at ``connections``."""
        self.target = self.base_target = connections

    @property
    def adaptive(self) -> bool:
        return self.state in (State.STARTING, State.WIDENING, State.TRIAL, State.NARROWING)

    @property
    def server_bound(self) -> bool:
        return self.state in (State.NARROWING, State.SERVER_BOUND)

    def window(self) -> float:
        """The length of the window being measured. The first is short (a
        capped link shows at once, and every early step widens the rest of the
        run); a halving is measured long (the servers that call for one are
        the ones whose rate swings most from window to window)."""
        interval = self.steps.probe_interval
        return interval * (0.5 if self.baseline == 0.0 else 3.0 if self.state is State.NARROWING else 1.0)

    def observe(self, now: float, received: int, waited: float, busy: int, loops: int = 0) -> bool:
        """One tick: ``received`` bytes so far, ``waited`` seconds the ``loops``
        event loops spent waiting for sockets (0 loops: none run), ``busy``
        ranges under way. True when the target grew (workers may start)."""
        if not self._started:
            if received:
                self._started = True
                if self.state is State.STARTING:
                    self.state = State.WIDENING
                self._open_window(now, received, waited)
            return False
        if self._settling:
            # After a step, the new connections' first round trips, or the
            # ranges still running beyond a lowered target, are not the new
            # count's measure: the window starts after them.
            if now - self._window_t < self.steps.probe_interval * 0.5 or busy > self.target:
                return False
            self._settling = False
            self._open_window(now, received, waited)
            return False
        if not self.adaptive or now - self._window_t < self.window():
            return False
        rate = (received - self._window_bytes) / (now - self._window_t)
        # The event loops never waiting on their sockets means this machine,
        # not the link, is the limit: more connections would only cost CPU and
        # lengthen the hash's lag.
        saturated = loops > 0 and waited - self._window_waited < 0.05 * (now - self._window_t) * loops
        before = self.target
        grew = self.judge(rate, busy, saturated)
        self._open_window(now, received, waited)
        self._settling = self.target != before
        return grew

    def _open_window(self, now: float, received: int, waited: float) -> None:
        self._window_t, self._window_bytes, self._window_waited = now, received, waited

    def judge(self, rate: float, busy: int, saturated: bool = False) -> bool:
        """Judge a window that moved ``rate`` bytes/s with ``busy`` ranges under
        way; ``saturated``: the client was the limit, so no step is taken (and
        the next window starts afresh). True when the target grew.

        A step must pay well beyond the noise of a busy machine (runs vary by
        10-20%): each connection costs the server and this machine CPU. A link
        that truly caps each connection gains far more (doubling 32 capped
        connections adds close to 100%)."""
        per_conn = rate / max(1, self.target)
        self.sizer.resize(per_conn, self.target, self.server_bound)
        self.sizer.trial = 0
        capped = per_conn < self.steps.slow_connection
        if not saturated:
            self.rates[self.target] = rate
        if self.state is State.NARROWING:
            return self._judge_halving(rate, capped)
        gain = self.steps.step_gain_capped if capped else self.steps.step_gain
        if self.baseline and rate < self.baseline * gain:
            self._judge_failed_step(rate, saturated)
            return False
        if saturated:
            self._hold_baseline(0.0, State.WIDENING)
            return False
        if self.target >= self.steps.max_connections or busy < 0.75 * self.target:
            # Connections wait for work: more would not help (yet). A first
            # window takes its rate as the baseline and looks again.
            self._hold_baseline(rate, self._measuring(rate) if self.baseline == 0.0 else State.HOLDING)
            return False
        self._widen(rate, per_conn, capped)
        return True

    def _hold_baseline(self, rate: float, state: State) -> None:
        self.baseline, self.base_target, self.state = rate, self.target, state

    @staticmethod
    def _measuring(baseline: float) -> State:
        """A window judged against ``baseline``: a trial, or (no rate to judge
        against) a fresh baseline measure."""
        return State.TRIAL if baseline else State.WIDENING

    def _widen(self, rate: float, per_conn: float, capped: bool) -> None:
        """Slow connections with every one busy: the link caps each connection
        (as CDNs do), so widen fast at first (8 -> 64). Past that, each step
        doubles: a server may pay for every connection."""
        before = self.target
        factor = 8 if capped and before <= 8 else 4 if capped and before < 32 else 2
        self.target = min(self.steps.max_connections, before * factor)
        self.sizer.begin_trial(per_conn, self.steps.probe_interval)
        self.baseline, self.base_target, self.state = rate, before, self._measuring(rate)

    def _judge_failed_step(self, rate: float, saturated: bool) -> None:
        """The last step did not pay enough to go on. One that still gained
        clearly is kept (going back would give the gain up: own server at
        20 MB/s per connection, 32 moved 377 MB/s, 64 moved 473); otherwise go
        back. When it even cost throughput, the server pays for each
        connection: fewer may serve better (a Python server near its CPU limit
        does), unless fewer were already measured to serve less (32: 410,
        64: 535, 128: 465 goes back to 64, not down to 32)."""
        if rate >= self.baseline * self.steps.step_keep:
            self._hold_baseline(rate, State.HOLDING)
            return
        self.target = self.base_target
        self.sizer.resize(self.baseline / max(1, self.target), self.target, server_bound=True)
        fewer = self.rates.get(self.target // 2)
        if (rate < self.baseline * self.steps.narrow_keep and not saturated
                and (fewer is None or fewer >= self.baseline)):
            self._halve(self.baseline)
            return
        self._hold_baseline(rate, State.SERVER_BOUND)

    def _judge_halving(self, rate: float, capped: bool) -> bool:
        """Each halving that keeps the rate is kept (the server, not the link,
        was the limit) and the next is tried. But when each connection moves
        no more than a capped link allows, the link may be what holds them:
        fewer can at best keep the rate, and a window that says they did may
        be noise (behind 20 MB/s per connection, 8 hold 160 MB/s whatever the
        server could do). There a halving must pay outright, and it is the
        last. True when the target grew back."""
        if rate < self.baseline * (1.0 if capped else self.steps.narrow_keep):
            self.target = self.base_target
            self.state = State.SERVER_BOUND
            return True
        if capped:
            self._hold_baseline(rate, State.SERVER_BOUND)
            return False
        self._halve(max(rate, self.baseline))
        return False

    def _halve(self, rate: float) -> None:
        """Halve the target, down to ``narrow_min``; ``rate`` is the one to
        keep up with. Connections beyond the target close as their ranges end
        (cutting them would not stop every server's work on them: some read
        on to the end of the range)."""
        before = self.target
        if before // 2 < self.steps.narrow_min:
            self._hold_baseline(rate, State.SERVER_BOUND)
            return
        self.target = before // 2
        self.baseline, self.base_target, self.state = rate, before, State.NARROWING
