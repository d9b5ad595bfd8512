"""Pulls started from the API: each runs the real pull in a thread and keeps
its progress events, so any number of clients can follow it (and reconnect)
as server-sent events.

Pulls use the server's settings: the sources the launch was given
(``--source``), else the configured ones. A pull that fails for the network
carries the doctor's verdict on it (``error.doctor``: the first failing
check, its code and fix), so the page shows the cause and the fix in place.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ..config import Settings
from ..errors import NetworkError, OfflineError, QwenhomeError
from ..progress import PROGRESS, ProgressEvent
from ..repo.ref import RepoRef

# Throttle for byte progress kept in memory; the last event before "done" is always kept.
PROGRESS_KEEP_SECONDS = 0.1


def doctor_verdict(settings: Settings, repo: str) -> dict[str, Any]:
    """The doctor's word on a failed pull, in short: ``{status, summary, fix,
    code?, check?}``. Offline by choice, it asks no network."""
    if settings.offline_forced:
        return {"status": "offline",
                "summary": "this server runs offline (--offline or HF_HUB_OFFLINE=1): it never reaches a source",
                "fix": "launch it again without --offline to pull from the page"}
    try:
        from ..doctor import DoctorOptions, DoctorTimeouts, run_doctor

        opts = DoctorOptions(timeouts=DoctorTimeouts(dns=1.0, connect=1.0, read=1.5, total=3.0))
        report = run_doctor(settings, repo=repo, options=opts)
    except Exception as exc:  # the verdict is a help, never a second failure
        return {"status": "skip", "summary": f"the doctor could not run: {exc}", "fix": ""}
    for status in ("fail", "warn"):
        for check in report.checks:
            if check.status == status:
                return {"status": status, "check": check.id, "code": check.code, "summary": check.summary,
                        "fix": check.fix}
    return {"status": "pass", "summary": "the doctor finds no network problem; the source may be down",
            "fix": "try again in a while"}


def failure(settings: Settings, ref: RepoRef, exc: QwenhomeError) -> dict[str, Any]:
    """What a failed pull shows: code, message, hint; for a network failure
    the doctor's verdict, whose fix is the hint."""
    out = exc.to_dict()
    if isinstance(exc, (NetworkError, OfflineError)):
        verdict = doctor_verdict(settings, ref.repo_id)
        out["doctor"] = verdict
        if verdict.get("fix"):
            out["hint"] = verdict["fix"]
    return out


@dataclass
class PullJob:
    id: str
    ref: RepoRef
    events: list[dict[str, Any]] = field(default_factory=list)
    state: str = "running"  # running, done, failed, cancelled
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.time)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = field(default_factory=list)
    _last_progress: float = 0.0

    @property
    def finished(self) -> bool:
        return self.state != "running"

    def summary(self) -> dict[str, Any]:
        last = next((e for e in reversed(self.events) if e.get("event") == PROGRESS), None)
        return {
            "id": self.id,
            "repo": str(self.ref),
            "state": self.state,
            "progress": last,
            "result": self.result,
            "error": self.error,
        }

    def add(self, event: dict[str, Any]) -> None:
        now = time.monotonic()
        with self._lock:
            if event.get("event") == PROGRESS:
                if self.events and self.events[-1].get("event") == PROGRESS and now - self._last_progress < PROGRESS_KEEP_SECONDS:
                    self.events[-1] = event  # replace: followers want the latest, not every step
                    self._notify()
                    return
                self._last_progress = now
            self.events.append(event)
            self._notify()

    def finish(self, state: str, event: dict[str, Any]) -> None:
        """Append the last event and end the job in one step, so a follower
        never sees the job ended without its last event."""
        with self._lock:
            self.events.append(event)
            self.state = state
            self._notify()

    def on_event(self, e: ProgressEvent) -> None:
        self.add(e.to_dict())

    def _notify(self) -> None:
        for loop, ev in list(self._waiters):
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:  # that client's loop is closed
                self._waiters.remove((loop, ev))

    async def follow(self, start: int = 0, keepalive: float = 15.0) -> AsyncIterator[tuple[int, dict[str, Any]] | None]:
        """Yield ``(index, event)`` from ``start`` until the pull ends; ``None``
        after ``keepalive`` seconds without news (for a keep-alive comment)."""
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.append(waiter)
        index = start
        try:
            while True:
                waiter[1].clear()
                with self._lock:
                    batch = self.events[index:]
                    done = self.finished
                for ev in batch:
                    yield index, ev
                    index += 1
                if done and not batch:
                    return
                if batch:
                    continue
                try:
                    await asyncio.wait_for(waiter[1].wait(), keepalive)
                except TimeoutError:
                    yield None
        finally:
            with self._lock:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)


class PullManager:
    """Starts pulls in threads; one running pull per repository."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.jobs: dict[str, PullJob] = {}
        self._lock = threading.Lock()

    def start(self, ref: RepoRef) -> tuple[PullJob, bool]:
        """The job pulling ``ref`` (``created`` False when one was running already)."""
        with self._lock:
            for job in self.jobs.values():
                if not job.finished and job.ref.repo_id == ref.repo_id and job.ref.rev == ref.rev:
                    return job, False
            job = PullJob(uuid.uuid4().hex[:16], ref)
            self.jobs[job.id] = job
        threading.Thread(target=self._run, args=(job,), name=f"qwenhome-pull-{job.id}", daemon=True).start()
        return job, True

    def get(self, job_id: str) -> PullJob | None:
        return self.jobs.get(job_id)

    def running_repos(self) -> set[str]:
        return {j.ref.repo_id for j in self.jobs.values() if not j.finished}

    def cancel_all(self) -> None:
        for job in self.jobs.values():
            job.cancel.set()

    def _run(self, job: PullJob) -> None:
        from ..pull import pull

        try:
            result = pull(self.settings, job.ref, on_event=job.on_event, cancel=job.cancel)
        except QwenhomeError as exc:
            state = "cancelled" if job.cancel.is_set() else "failed"
            job.error = exc.to_dict() if state == "cancelled" else failure(self.settings, job.ref, exc)
            job.finish(state, {"event": "error", "repo": str(job.ref), "error": job.error})
        except Exception as exc:  # a bug must still end the stream with a reason
            job.error = {"code": "pull-failed", "message": str(exc), "hint": ""}
            job.finish("failed", {"event": "error", "repo": str(job.ref), "error": job.error})
        else:
            job.result = result.to_dict()
            job.finish("done", {"event": "result", **job.result})
