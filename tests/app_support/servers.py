"""Real servers on 127.0.0.1 for the app tests: uvicorn in a thread, or the
real ``qwenhome.app.serve`` process."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import uvicorn

from tests.support.cli import clean_env


@contextmanager
def serve_app(app: Any, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve ``app`` on a free port; yields the base URL."""
    config = uvicorn.Config(app, host=host, port=0, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def wait_ready(base_url: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            last = httpx.get(f"{base_url}/health", timeout=2).json()
        except httpx.HTTPError:
            pass
        if last.get("status") in ("ready", "error"):
            return last
        time.sleep(0.1)
    raise TimeoutError(f"{base_url} not ready: {last}")


class Tee(io.StringIO):
    """What the launcher says, readable while it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()

    def write(self, s: str) -> int:
        with self.lock:
            return super().write(s)

    def text(self) -> str:
        with self.lock:
            return self.getvalue()


@dataclass
class ServerProcess:
    """``python -m qwenhome.app.serve`` running in its own process."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def rss(self) -> int:
        """Resident memory now, bytes."""
        return _status_kib(self.proc.pid, "VmRSS") * 1024

    def reset_peak(self) -> bool:
        """Start counting the peak resident memory again (Linux 4.0+); False where not possible."""
        try:
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def peak(self) -> int:
        """Peak resident memory since the start or the last :meth:`reset_peak`, bytes."""
        return _status_kib(self.proc.pid, "VmHWM") * 1024

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


@contextmanager
def serve_process(home: Path, snapshot: Path, model: str, *extra: str, workdir: Path,
                  timeout: float = 120.0, python: str = sys.executable) -> Iterator[ServerProcess]:
    """The real API server process over ``snapshot`` in ``home`` on a free port,
    ready; its output (uvicorn's log included) goes to ``workdir/serve-PORT.log``.
    ``python``: the interpreter (another virtualenv's)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    log = workdir / f"serve-{port}.log"
    env = {**clean_env(workdir / "home", extra={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}),
           "QWEN_HOME": str(home)}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [python, "-m", "qwenhome.app.serve", "--home", str(home), "--model", model,
             "--snapshot", str(snapshot), "--port", str(port), *extra],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=workdir,
        )
    server = ServerProcess(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited: {server.log_text()[-3000:]}")
            try:
                if httpx.get(f"{server.url}/health", timeout=2).json().get("status") == "ready":
                    break
            except (httpx.HTTPError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server was not ready: {server.log_text()[-3000:]}")
            time.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def raw_request(url: str, head: str, body_chunks: Iterator[bytes] = iter(()), timeout: float = 10.0) -> tuple[int, dict[str, object]]:
    """Send ``head`` (and then the chunks, as far as the server reads them) on a
    raw socket; return the status and JSON body of the answer."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as s:
        s.sendall(head.encode("latin-1"))
        try:
            for chunk in body_chunks:
                s.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed: read the answer
        data = b""
        while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + _length(data):
            piece = s.recv(65536)
            if not piece:
                break
            data += piece
    status = int(data.split(b" ", 2)[1])
    return status, json.loads(data.split(b"\r\n\r\n", 1)[1])


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-length":
            return int(value)
    return 0
