"""Image jobs: what was asked, what happened, and a queue that really runs them.

A :class:`Job` records its events (``queued``, ``started``, one ``step`` per
denoising step reported by the pipeline, ``image`` per finished image, and one
terminal event: ``succeeded``, ``failed`` or ``cancelled``). Events are only
appended by the thread doing the work; readers on the event loop follow them
through :meth:`Job.follow` without blocking it.

:class:`JobQueue` runs jobs one at a time on a worker thread, in submission
order. One at a time is deliberate: a diffusers pipeline object is not safe to
call from two threads, and one Qwen-Image generation already uses the memory
the policy planned for.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import JobNotFoundError, QueueFullError

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})


@dataclass(frozen=True)
class ImageRequest:
    """A validated generation request. ``image``/``mask`` are PNG bytes of the uploads."""

    prompt: str
    width: int
    height: int
    steps: int
    seed: int
    n: int = 1
    negative_prompt: str | None = None
    true_cfg_scale: float = 4.0
    mode: str = "text"  # text | img2img | inpaint
    strength: float | None = None
    image: bytes | None = field(default=None, repr=False)
    mask: bytes | None = field(default=None, repr=False)

    @property
    def total_steps(self) -> int:
        """Denoising steps the pipeline will report, over all ``n`` images.

        img2img and inpaint skip the first ``1 - strength`` of the schedule;
        this is diffusers' own arithmetic (``get_timesteps``)."""
        per_image = self.steps
        if self.mode != "text" and self.strength is not None:
            init = min(self.steps * self.strength, self.steps)
            per_image = self.steps - int(max(self.steps - init, 0))
        return per_image * self.n

    def seeds(self) -> list[int]:
        """Image ``i`` is generated alone from ``seed + i``, so each can be reproduced alone."""
        return [self.seed + i for i in range(self.n)]

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mode": self.mode,
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "n": self.n,
            "width": self.width,
            "height": self.height,
            "size": f"{self.width}x{self.height}",
            "num_inference_steps": self.steps,
            "true_cfg_scale": self.true_cfg_scale,
            "seed": self.seed,
        }
        if self.mode != "text":
            out["strength"] = self.strength
        return out


class Job:
    """One request's life. Mutated only by the worker; read from anywhere."""

    def __init__(self, request: ImageRequest, job_id: str | None = None) -> None:
        self.id = job_id or uuid.uuid4().hex
        self.request = request
        self.state = QUEUED
        self.created = time.time()
        self.started: float | None = None
        self.finished: float | None = None
        self.error: dict[str, Any] | None = None
        self.images: list[str] = []
        self.step = 0
        self.cancel_requested = threading.Event()
        self._events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._watchers: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self.emit("queued")

    # -- written by the worker -------------------------------------------------
    def emit(self, event: str, **data: Any) -> dict[str, Any]:
        with self._lock:
            record = {"seq": len(self._events), "event": event, "job": self.id, "time": time.time(), **data}
            self._events.append(record)
            watchers = list(self._watchers)
        for loop, flag in watchers:
            try:
                loop.call_soon_threadsafe(flag.set)
            except RuntimeError:  # that loop is closed; its reader is gone
                pass
        return record

    def set_state(self, state: str, **data: Any) -> None:
        now = time.time()
        if state == RUNNING:
            self.started = now
        if state in TERMINAL:
            self.finished = now
        self.state = state
        self.emit("started" if state == RUNNING else state, **data)

    # -- read from anywhere ----------------------------------------------------
    @property
    def done(self) -> bool:
        return self.state in TERMINAL

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._events[since:])

    async def follow(self, since: int = 0) -> AsyncIterator[dict[str, Any]]:
        """Every event from ``since`` on, live, until the terminal one. Never blocks the loop."""
        loop = asyncio.get_running_loop()
        flag = asyncio.Event()
        with self._lock:
            self._watchers.append((loop, flag))
        try:
            while True:
                flag.clear()
                batch = self.events(since)
                for record in batch:
                    yield record
                    if record["event"] in TERMINAL:
                        return
                since += len(batch)
                if not batch:
                    await flag.wait()
        finally:
            with self._lock:
                self._watchers.remove((loop, flag))

    async def wait(self) -> None:
        async for _ in self.follow():
            pass

    def to_dict(self, url_for: Callable[[str, str], str] | None = None) -> dict[str, Any]:
        total = self.request.total_steps
        out: dict[str, Any] = {
            "id": self.id,
            "state": self.state,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "progress": {"step": self.step, "total": total},
            "params": self.request.params(),
            "images": [
                {"name": name, "url": url_for(self.id, name) if url_for else name} for name in self.images
            ],
        }
        if self.error:
            out["error"] = self.error
        return out


class JobQueue:
    """Runs ``runner(job)`` for each submitted job, in order, on one worker thread."""

    def __init__(
        self,
        runner: Callable[[Job], None],
        *,
        max_pending: int = 16,
        keep: int = 256,
        before_each: Callable[[], None] | None = None,
    ) -> None:
        """``before_each`` blocks before a job starts (e.g. until the engine can take it)."""
        self._runner = runner
        self._before_each = before_each
        self._max_pending = max_pending
        self._keep = keep
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.current: Job | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="qwenhome-images", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel what is queued or running and wait for the worker to finish."""
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            if not job.done:
                self.cancel(job.id)
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def pending(self) -> int:
        with self._lock:
            return sum(1 for j in self._jobs.values() if j.state == QUEUED)

    def submit(self, request: ImageRequest) -> Job:
        with self._lock:
            if sum(1 for j in self._jobs.values() if j.state == QUEUED) >= self._max_pending:
                raise QueueFullError(f"{self._max_pending} image jobs are already waiting")
            job = Job(request)
            self._jobs[job.id] = job
            self._trim()
        self._queue.put(job)
        return job

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFoundError(f"no image job {job_id!r}", job=job_id)
        return job

    def cancel(self, job_id: str) -> Job:
        """Queued jobs end at once; a running one ends at its next denoising step."""
        job = self.get(job_id)
        job.cancel_requested.set()
        with self._lock:
            if job.state == QUEUED:
                job.set_state(CANCELLED, reason="cancelled before it started")
        return job

    def _trim(self) -> None:
        # Forget the oldest finished jobs; their images stay in the result store.
        finished = [k for k, j in self._jobs.items() if j.done]
        for key in finished[: max(0, len(self._jobs) - self._keep)]:
            del self._jobs[key]

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if self._before_each is not None and job.state == QUEUED:
                self._before_each()
            with self._lock:
                if job.state != QUEUED:  # cancelled while waiting
                    continue
                job.set_state(RUNNING)
                self.current = job
            try:
                self._runner(job)
            finally:
                self.current = None
