"""Child processes the launcher keeps alive: the API server and, with vLLM,
the engine server.

A child that exits unexpectedly is restarted after a growing delay, at most
``max_restarts`` times in a row (a child that ran for ``stable_after`` seconds
starts the count again), and the reason — exit code or signal, and the last
lines it wrote to stderr — is shown. Each child runs in its own session, so
stopping sends it exactly one SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import collections
import collections.abc
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO

Say = Callable[[str], None]


@dataclass(frozen=True)
class RestartPolicy:
    max_restarts: int = 5
    backoff: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0)
    stable_after: float = 60.0
    # Exit codes that mean "would fail the same way again": never restarted.
    fatal_codes: tuple[int, ...] = (3,)


def oom_kill_count() -> int | None:
    """How many processes the kernel's out-of-memory killer has killed since
    boot (Linux's ``/proc/vmstat``), or None where that is not known."""
    try:
        with open("/proc/vmstat", encoding="ascii") as f:
            for line in f:
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def describe_exit(code: int, *, oom_kills: int | None = None) -> str:
    """Why a child ended. ``oom_kills``: the out-of-memory killer's kills since
    it started (None: unknown). A signal is the whole reason: whatever the
    child last wrote was written before it, and says nothing of it."""
    if code >= 0:
        return f"exited with code {code}"
    try:
        text = f"killed by {signal.Signals(-code).name} (signal {-code})"
    except ValueError:
        return f"killed by signal {-code}"
    if code == -signal.SIGKILL:
        if oom_kills:
            text += ": the kernel's out-of-memory killer stopped it (the machine ran out of memory)"
        else:
            text += ": by another process, or by the kernel when memory ran out (`dmesg` says which)"
    return text


def last_meaningful_line(lines: collections.abc.Iterable[str]) -> str:
    """The last line that says something: not blank, not a progress bar."""
    for line in reversed(list(lines)):
        text = line.strip()
        if text and "%|" not in text and "\r" not in text:
            return text
    return ""


def exit_reason(code: int, tail: collections.abc.Iterable[str], oom_kills_at_start: int | None) -> str:
    """Why a child ended: :func:`describe_exit`, with the out-of-memory
    killer's kills since ``oom_kills_at_start`` (:func:`oom_kill_count` when it
    started), and for an exit code the last line it wrote (its error)."""
    now = oom_kill_count()
    start = oom_kills_at_start
    reason = describe_exit(code, oom_kills=None if now is None or start is None else now - start)
    if code < 0:
        return reason
    last = last_meaningful_line(tail)
    return reason + (f": {last}" if last else "")


@dataclass
class Child:
    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    say: Say = lambda _msg: None
    stderr_sink: IO[str] = field(default_factory=lambda: sys.stderr)
    proc: subprocess.Popen[str] | None = None
    restarts: int = 0
    started_at: float = 0.0
    restart_at: float | None = None
    last_exit: str = ""
    oom_kills_at_start: int | None = None
    tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=12))

    def start(self) -> None:
        self.tail.clear()
        self.oom_kills_at_start = oom_kill_count()
        self.proc = subprocess.Popen(
            list(self.argv),
            env=dict(self.env),
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        self.started_at = time.monotonic()
        self.restart_at = None
        threading.Thread(target=self._pump, args=(self.proc,), daemon=True, name=f"{self.name}-stderr").start()

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        # Forward the child's stderr as it comes, and keep its tail for the reason.
        assert proc.stderr is not None
        for line in proc.stderr:
            self.tail.append(line.rstrip("\n"))
            try:
                self.stderr_sink.write(f"[{self.name}] {line}")
                self.stderr_sink.flush()
            except (OSError, ValueError):
                pass

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check(self, now: float) -> str | None:
        """Restart bookkeeping; returns a fatal reason when the child must not
        be restarted again, else None."""
        if self.proc is None:
            return None
        if self.restart_at is not None:
            if now >= self.restart_at:
                self.say(f"restarting {self.name} (restart {self.restarts} of {self.policy.max_restarts})")
                self.start()
            return None
        code = self.proc.poll()
        if code is None:
            return None
        self.last_exit = self.exit_reason(code)
        if code in self.policy.fatal_codes:
            return f"{self.name} {self.last_exit}"
        if now - self.started_at >= self.policy.stable_after:
            self.restarts = 0
        if self.restarts >= self.policy.max_restarts:
            return f"{self.name} {self.last_exit}; gave up after {self.restarts} restarts"
        delay = self.policy.backoff[min(self.restarts, len(self.policy.backoff) - 1)]
        self.restarts += 1
        self.restart_at = now + delay
        self.say(f"{self.name} {self.last_exit}; restarting in {delay:g} s")
        return None

    def exit_reason(self, code: int) -> str:
        """The exit, and for an exit code the last line the child wrote (its error)."""
        if code >= 0:
            time.sleep(0.05)  # let the pump thread read the last lines
        return exit_reason(code, self.tail, self.oom_kills_at_start)

    def stop(self, grace: float = 10.0) -> None:
        proc = self.proc
        self.restart_at = None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            # The child's own children (e.g. vLLM workers) share its session.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        except ProcessLookupError:
            pass
