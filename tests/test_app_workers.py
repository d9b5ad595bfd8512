"""An engine worker process (the real ``qwenhome.app.workers.main`` over the
tiny model) seen from the API's side: its CPU priority while it loads and
once it serves."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from qwenhome.app.engine import SamplingParams
from qwenhome.app.supervisor import RestartPolicy
from qwenhome.app.workers.process import LOADING, READY, WorkerOptions, WorkerProcess, WorkerSpec
from qwenhome.demo import DEMO_REPO
from tests.app_support.tiny import tiny_model_dir


def nice_of(pid: int) -> int:
    # /proc/PID/stat: the 19th field is the nice value (counted after the command's closing parenthesis).
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def nice_of_thread(pid: int, tid: str) -> int:
    return int(Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()[16])


@pytest.mark.skipif(os.nice(0) > 9, reason="this process runs at nice > 9: no room to go 10 lower")
def test_a_worker_loads_at_the_apis_priority_and_generates_below_it() -> None:
    # Loading imports torch and transformers (seconds of CPU). At nice 10 on a
    # busy machine that took minutes; the API waits for it anyway, so the
    # load must not yield to every other process.
    base = os.nice(0)
    worker = WorkerProcess(WorkerSpec("chat", DEMO_REPO, tiny_model_dir()), WorkerOptions(nice=10))
    worker.start()
    samples: list[int] = []
    try:
        while worker.state == LOADING:
            pid = worker.pid
            if pid is not None:
                try:
                    samples.append(nice_of(pid))
                except OSError:
                    pass
            time.sleep(0.05)
        assert worker.state == READY, worker.describe()
        pid = worker.pid
        assert pid is not None
        late = samples[-6:-1]  # the last moments of the load (the very last may follow the renice)
        assert len(late) >= 3, samples
        assert set(late) == {base}, f"nice while loading: {samples}"
        # Every thread, those made while loading (torch's) too: on Linux a nice value is per thread.
        threads = {tid.name: nice_of_thread(pid, tid.name) for tid in Path(f"/proc/{pid}/task").iterdir()}
        assert len(threads) > 1 and set(threads.values()) == {base + 10}, threads
    finally:
        worker.stop()


def test_with_an_event_loop_the_loop_reads_the_worker_and_sees_it_crash() -> None:
    # The loop reads the worker's socket itself: a piece of text reaches the
    # request without a reader thread's wake-up first (bench/chat_overhead.py).
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        worker = WorkerProcess(WorkerSpec("chat", DEMO_REPO, tiny_model_dir()),
                               WorkerOptions(restart=RestartPolicy(backoff=(0.1,))), loop=loop)
        worker.start()
        try:
            assert await worker.until_ready(120), worker.describe()
            names = [t.name for t in threading.enumerate()]
            assert "qwenhome-chat-worker-reader" not in names, names
            got: list[dict[str, Any]] = []
            on: set[int] = set()
            done = asyncio.Event()

            def deliver(msg: dict[str, Any]) -> None:
                on.add(threading.get_ident())
                got.append(msg)
                if "end" in msg:
                    done.set()

            worker.open("generate", deliver, messages=[{"role": "user", "content": "Hello"}],
                        params=SamplingParams(max_tokens=4))
            await asyncio.wait_for(done.wait(), 60)
            assert on == {threading.get_ident()}
            assert got[-1]["end"] == "done" and any("text" in m for m in got), got
            # A crash is seen on the loop too: the worker is restarted and serves again.
            pid = worker.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 30
            while worker.state == READY and worker.pid in (pid, None):
                assert time.monotonic() < deadline, worker.describe()
                await asyncio.sleep(0.02)
            assert await worker.until_ready(120), worker.describe()
            assert worker.pid not in (None, pid) and worker.restarts == 1
            assert "SIGKILL" in worker.last_exit
        finally:
            worker.stop()  # on the loop: its reader is removed before the socket closes
        assert worker.state == "stopped"

    asyncio.run(scenario())
