"""Start the test app in its own process and wait until the model is loaded."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.app_support.servers import ServerProcess

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def image_server(home: Path, snapshot: Path | None = None, timeout: float = 90.0) -> Iterator[str]:
    """Yield the base URL of a running server whose image model is ready.

    With a snapshot: the small test app around the router (tests.images_support.app).
    Without: the real app (qwenhome.app.server) with the images extension it
    finds in the home (tests.images_support.realapp)."""
    with image_server_process(home, snapshot, timeout) as server:
        yield server.url


@contextmanager
def image_server_process(home: Path, snapshot: Path | None = None, timeout: float = 90.0) -> Iterator[ServerProcess]:
    """As :func:`image_server`, with the process (for its memory) and its log."""
    port = free_port()
    module, args = ("tests.images_support.app", [str(home), str(snapshot), str(port)]) if snapshot else (
        "tests.images_support.realapp", [str(home), str(port)])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    log = (home / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError("image test server exited: " + (home / "server.log").read_text()[-3000:])
            try:
                state = httpx.get(base + "/api/images/status", timeout=2).json()["state"]
                if state == "ready":
                    break
                if state == "failed":
                    raise RuntimeError(f"image model failed to load: {httpx.get(base + '/api/images/status').text}")
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("image test server did not become ready")
            time.sleep(0.2)
        yield ServerProcess(base, proc, home / "server.log")
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
