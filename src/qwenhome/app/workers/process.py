"""An engine worker process, seen from the API: start, readiness, calls,
crashes and restarts.

    worker = WorkerProcess(WorkerSpec("chat", "Org/Name", snapshot))
    worker.start()                      # returns at once; the model loads in the child
    await worker.until_ready(60)        # from the event loop (wait_ready from a thread)
    call = worker.open("generate", messages=..., params=...)
    msg = call.next(0.1)                # progress messages, then one with "end"
    worker.stop()

States: ``loading`` -> ``ready``. Any exit the API did not ask for is a
crash: every call in flight ends at once with ``engine-crashed`` naming the
cause (the signal, or the exit code and the worker's last line, as the
launcher's supervisor says it), and the worker is started again after the
supervisor's backoff (``restarting`` -> ``loading`` -> ``ready``), until its
restart limit (``failed``). A load the worker reports failed (a broken
snapshot, a missing library) is ``failed`` at once: the same files would fail
the same way. :meth:`stop` -> ``stopped``.

Once loaded, the worker runs at a lower CPU priority (``nice``) with its own torch
threads, so whatever it computes, the API process keeps its share of the CPU
and never waits for the worker's GIL.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ...errors import QwenhomeError
from ..errors import ApiError
from ..supervisor import RestartPolicy, exit_reason, oom_kill_count
from .protocol import Channel, Message

log = logging.getLogger("qwenhome.app.workers")

LOADING, READY, RESTARTING, FAILED, STOPPED = "loading", "ready", "restarting", "failed", "stopped"
SETTLED = frozenset({READY, FAILED, STOPPED})
RETRY_AFTER = 5  # seconds a client is told to wait while an engine loads or restarts


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker serves: ``kind`` names its handler (``chat``, ``image``)."""

    kind: str
    model: str
    snapshot: Path
    options: Mapping[str, Any] = field(default_factory=dict)  # the handler's own (e.g. the image policy)


@dataclass(frozen=True)
class WorkerOptions:
    """How workers run, the same for every kind."""

    python: tuple[str, ...] = (sys.executable,)  # the interpreter (and its flags) the worker runs in
    env: Mapping[str, str] | None = None  # None: this process's environment
    nice: int = 10  # below the API, which must answer whatever the engines compute
    threads: int = 0  # torch threads in each worker; 0: torch's own choice
    restart: RestartPolicy = field(default_factory=lambda: RestartPolicy(backoff=(0.5, 1.0, 2.0, 4.0, 8.0)))
    stderr: IO[str] | None = None  # where the worker's output goes (None: this process's stderr)


def error_from(doc: Mapping[str, Any], status: int = 500) -> ApiError:
    """The error a worker reported (``QwenhomeError.to_dict()``), to raise in the API."""
    context = doc.get("context") or {}
    return ApiError(status, str(doc.get("message", "")), code=str(doc.get("code", "engine-error")),
                    hint=doc.get("hint") or None, **context)


class Call:
    """One request to the worker. Its messages arrive in order; the last has
    ``end``. With ``deliver``, every message goes to it instead of :meth:`next`,
    called on the thread that reads the worker's socket (it must not block)."""

    def __init__(self, worker: WorkerProcess, call_id: int,
                 deliver: Callable[[Message], None] | None = None) -> None:
        self.id = call_id
        self._worker = worker
        self._deliver = deliver
        self._queue: queue.Queue[Message] = queue.Queue()
        self.ended = False
        self._cancelled = False

    def next(self, timeout: float | None = None) -> Message | None:
        """The next message, or None when none came within ``timeout`` seconds."""
        try:
            msg = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if "end" in msg:
            self.ended = True
        return msg

    def cancel(self) -> None:
        """Ask the worker to stop this call (it ends with ``end: cancelled``). Idempotent."""
        if not self._cancelled and not self.ended:
            self._cancelled = True
            self._worker.send({"op": "cancel", "id": self.id})

    def put(self, msg: Message) -> None:
        if self._deliver is None:
            self._queue.put(msg)
            return
        if "end" in msg:
            self.ended = True
        try:
            self._deliver(msg)
        except Exception:  # never the reader's end: it serves every call
            log.exception("a call's receiver failed")


def _running(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether this thread runs ``loop`` (else: another thread, or a restart's timer)."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:  # no loop runs on this thread
        return False


class WorkerProcess:
    def __init__(self, spec: WorkerSpec, options: WorkerOptions | None = None,
                 say: Callable[[str], None] | None = None, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """``loop``: the event loop that reads the worker's messages (else a thread does)."""
        self.spec = spec
        self.loop = loop
        self.options = options or WorkerOptions()
        self.name = f"{spec.kind} worker"
        self._say = say or log.warning
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._calls: dict[int, Call] = {}
        self._ids = itertools.count(1)
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self.state = STOPPED
        self.info: dict[str, Any] = {}
        self.error: QwenhomeError | None = None
        self.last_exit = ""
        self.restarts = 0
        self.started_at = 0.0
        self._proc: subprocess.Popen[bytes] | None = None
        self._channel: Channel | None = None
        self._pump: threading.Thread | None = None
        self._epoch = 0
        self._stop_error: QwenhomeError | None = None
        self._timer: threading.Timer | None = None
        self._oom_at_start: int | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=12)

    @property
    def model(self) -> str:
        return self.spec.model

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    # -- state -----------------------------------------------------------------
    def _set(self, state: str) -> None:
        """Change the state; the caller holds the lock."""
        self.state = state
        self._changed.notify_all()
        for loop, event in list(self._waiters):
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop is closed
                self._waiters.remove((loop, event))

    def wait_settled(self, timeout: float | None = None) -> bool:
        """Block until ready, failed or stopped; False when ``timeout`` passed first."""
        with self._changed:
            return self._changed.wait_for(lambda: self.state in SETTLED, timeout)

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self.wait_settled(timeout) and self.state == READY

    async def until_ready(self, timeout: float) -> bool:
        """Wait, without blocking the event loop, until ready or settled otherwise."""
        if self.state == READY:
            return True
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.append(waiter)
        deadline = time.monotonic() + timeout
        try:
            while self.state not in SETTLED:
                waiter[1].clear()
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter[1].wait(), left)
            return self.state == READY
        finally:
            with self._lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def unavailable(self) -> QwenhomeError:
        """Why a request cannot be served now (the state is not ``ready``)."""
        state, what = self.state, f"the {self.spec.kind} engine ({self.spec.model})"
        retry = {"Retry-After": str(RETRY_AFTER)}
        if state == LOADING:
            return ApiError(503, f"{self.spec.model} is still loading", code="engine-loading",
                            hint="retry in a few seconds; GET /health answers 200 once it is ready", headers=retry)
        if state == RESTARTING:
            return ApiError(503, f"{what} is restarting; it stopped: {self.last_exit}", code="engine-unavailable",
                            hint="retry in a few seconds; GET /health answers 200 once it is back", headers=retry)
        if state == FAILED and self.error is not None:
            return self.error
        if self._stop_error is not None:
            return self._stop_error
        return ApiError(503, f"{what} is not running", code="engine-unavailable")

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.spec.kind,
            "model": self.spec.model,
            "state": self.state,
            "pid": self.pid,
            "restarts": self.restarts,
            "last_exit": self.last_exit or None,
            "error": self.error.to_dict() if self.error is not None and self.state == FAILED else None,
            "info": self.info,
        }

    # -- the process -----------------------------------------------------------
    def start(self) -> None:
        """Start the worker; it reports ``ready`` once its model is loaded."""
        with self._lock:
            if self.state != STOPPED:
                return
            self._stop_error = None
            self.restarts = 0
            self.error = None
        self._spawn()

    def _spawn(self) -> None:
        ours, theirs = socket.socketpair()
        out_r, out_w = os.pipe()
        argv = [*self.options.python, "-m", "qwenhome.app.workers.main", "--fd", str(theirs.fileno())]
        try:
            proc = subprocess.Popen(argv, env=None if self.options.env is None else dict(self.options.env),
                                    stdin=subprocess.DEVNULL, stdout=out_w, stderr=out_w,
                                    pass_fds=(theirs.fileno(),))
        except OSError as exc:
            ours.close()
            os.close(out_r)
            with self._lock:
                self.error = QwenhomeError(f"cannot start the {self.name}: {exc}", code="engine-load-failed")
                self._set(FAILED)
            return
        finally:
            theirs.close()
            os.close(out_w)
        channel = Channel(ours)
        with self._lock:
            self._epoch += 1
            epoch = self._epoch
            self._proc, self._channel = proc, channel
            self._oom_at_start = oom_kill_count()
            self.tail.clear()
            self.started_at = time.monotonic()
            self.info = {}
            self._set(LOADING)
        self._pump = threading.Thread(target=self._forward_output, args=(out_r,), daemon=True,
                                      name=f"qwenhome-{self.spec.kind}-worker-output")
        self._pump.start()
        if not self._watch(epoch, proc, channel):
            threading.Thread(target=self._read, args=(epoch, proc, channel), daemon=True,
                             name=f"qwenhome-{self.spec.kind}-worker-reader").start()
        self.send({"op": "init", "kind": self.spec.kind, "model": self.spec.model,
                   "snapshot": str(self.spec.snapshot), "options": dict(self.spec.options),
                   "nice": self.options.nice, "threads": self.options.threads, "parent": os.getpid()},
                  channel)

    def _forward_output(self, fd: int) -> None:
        # The worker's stderr and stdout, line by line, and their tail for the exit reason.
        sink = self.options.stderr or sys.stderr
        with open(fd, "rb") as stream:
            for raw in stream:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                self.tail.append(line)
                try:
                    sink.write(f"[{self.spec.kind} worker] {line}\n")
                    sink.flush()
                except (OSError, ValueError):
                    log.debug("cannot forward the %s's output", self.name, exc_info=True)

    def send(self, msg: Message, channel: Channel | None = None) -> None:
        """Send to the worker; a worker that is gone is noticed by the reader."""
        channel = channel or self._channel
        if channel is None:
            return
        try:
            channel.send(msg)
        except OSError:
            log.debug("the %s is gone; its exit is handled by the reader", self.name, exc_info=True)

    def _read(self, epoch: int, proc: subprocess.Popen[bytes], channel: Channel) -> None:
        fatal: QwenhomeError | None = None
        while (msg := channel.recv()) is not None:
            fatal = self._dispatch(epoch, msg) or fatal
        self._exited(epoch, proc.wait(), fatal)

    def _dispatch(self, epoch: int, msg: Message) -> QwenhomeError | None:
        """Act on one message from the worker; returns the error of a failed load."""
        event = msg.get("event")
        if event == "ready":
            with self._lock:
                if epoch == self._epoch and self.state == LOADING:
                    self.info = dict(msg.get("info", {}))
                    self.error = None
                    self._set(READY)
        elif event == "failed":
            return error_from(msg.get("error", {}), 503)
        else:
            with self._lock:
                call = self._calls.get(msg.get("id", -1))
                if call is not None and "end" in msg:
                    del self._calls[call.id]
            if call is not None:
                call.put(msg)
        return None

    # -- reading on the event loop ---------------------------------------------
    # With a loop, the worker's socket is read by the loop itself: a piece of
    # text reaches its request without waking a reader thread first and then
    # the loop (two scheduler wake-ups on the way to the first token; on a
    # busy machine each costs a share of a millisecond).
    def _watch(self, epoch: int, proc: subprocess.Popen[bytes], channel: Channel) -> bool:
        """Read ``channel`` on ``self.loop``; False when there is no loop to read on."""
        loop = self.loop
        if loop is None or not hasattr(socket, "MSG_DONTWAIT"):
            return False
        fatal: list[QwenhomeError | None] = [None]

        def readable() -> None:
            msgs = channel.recv_ready()
            if msgs is None:  # the worker is gone: waiting for its exit may block, so not here
                loop.remove_reader(channel.sock.fileno())
                threading.Thread(target=lambda: self._exited(epoch, proc.wait(), fatal[0]), daemon=True,
                                 name=f"qwenhome-{self.spec.kind}-worker-exit").start()
                return
            for msg in msgs:
                fatal[0] = self._dispatch(epoch, msg) or fatal[0]

        def attach() -> None:
            with self._lock:  # stopped meanwhile: its descriptor may be another socket's by now
                current = self._channel is channel
            if current:
                loop.add_reader(channel.sock.fileno(), readable)

        if _running(loop):
            attach()
            return True
        try:
            loop.call_soon_threadsafe(attach)
        except RuntimeError:  # the loop is closed
            return False
        return True

    def _unwatch(self, channel: Channel) -> None:
        """Stop reading ``channel`` on the loop before it closes (its descriptor may be reused)."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        fd = channel.sock.fileno()
        if fd < 0:
            return
        if _running(loop):
            loop.remove_reader(fd)
            return
        done = threading.Event()

        def remove() -> None:
            loop.remove_reader(fd)
            done.set()

        try:
            loop.call_soon_threadsafe(remove)
        except RuntimeError:
            return
        done.wait(5.0)

    def _exited(self, epoch: int, code: int, fatal: QwenhomeError | None) -> None:
        if code >= 0 and self._pump is not None:
            self._pump.join(2.0)  # the last lines it wrote say why
        reason = exit_reason(code, self.tail, self._oom_at_start)
        what = f"the {self.spec.kind} engine ({self.spec.model})"
        message = ""
        with self._lock:
            if epoch != self._epoch:
                return
            calls = list(self._calls.values())
            self._calls.clear()
            self._channel = None
            self.last_exit = reason
            if self.state == STOPPED:
                err = self._stop_error or ApiError(503, f"{what} was stopped", code="engine-unavailable")
            elif fatal is not None:
                err = self.error = fatal
                self._set(FAILED)
            else:
                policy = self.options.restart
                err = ApiError(503, f"{what} crashed: {reason}", code="engine-crashed",
                               hint="the server restarts it; send the request again in a few seconds",
                               headers={"Retry-After": str(RETRY_AFTER)})
                if time.monotonic() - self.started_at >= policy.stable_after:
                    self.restarts = 0
                if self.restarts >= policy.max_restarts:
                    self.error = ApiError(
                        503, f"{what} crashed: {reason}; gave up after {self.restarts} restarts",
                        code="engine-crashed", hint="the server's log says why; serve another model or restart it")
                    self._set(FAILED)
                    message = self.error.message
                else:
                    delay = policy.backoff[min(self.restarts, len(policy.backoff) - 1)]
                    self.restarts += 1
                    self._set(RESTARTING)
                    self._timer = threading.Timer(delay, self._respawn, args=(epoch,))
                    self._timer.daemon = True
                    self._timer.start()
                    message = f"{self.name} ({self.spec.model}) {reason}; restarting in {delay:g} s"
        status = err.status if isinstance(err, ApiError) else 503
        for call in calls:
            call.put({"end": "error", "error": err.to_dict(), "status": status})
        if message:
            self._say(message)

    def _respawn(self, epoch: int) -> None:
        with self._lock:
            if self.state != RESTARTING or epoch != self._epoch:
                return
        self._spawn()

    def open(self, op: str, deliver: Callable[[Message], None] | None = None, **payload: Any) -> Call:
        """Send a request; raises :meth:`unavailable` unless the worker is ready.
        ``deliver``: see :class:`Call`."""
        with self._lock:
            channel = self._channel
            if self.state != READY or channel is None:
                raise self.unavailable()
            call = Call(self, next(self._ids), deliver)
            self._calls[call.id] = call
        self.send({"op": op, "id": call.id, **payload}, channel)
        return call

    def stop(self, error: QwenhomeError | None = None, grace: float = 10.0) -> None:
        """Stop the worker; calls in flight end with ``error`` (default: engine-unavailable)."""
        what = f"the {self.spec.kind} engine ({self.spec.model})"
        err = error or ApiError(503, f"{what} was stopped", code="engine-unavailable")
        with self._lock:
            self._stop_error = err
            if self._timer is not None:
                self._timer.cancel()
            proc, channel = self._proc, self._channel
            self._channel = None
            calls = list(self._calls.values())
            self._calls.clear()
            self._set(STOPPED)
        status = err.status if isinstance(err, ApiError) else 503
        for call in calls:
            call.put({"end": "error", "error": err.to_dict(), "status": status})
        if channel is not None:
            self._unwatch(channel)
            channel.close()  # the worker exits as soon as its socket closes
        if proc is None or proc.poll() is not None:
            return
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
