"""A server that answers, but slower than any link: a body trickled a byte
at a time (each byte within the read time-out, so that alone never fires)
ends with response-timeout within a bound, instead of holding the pull."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from qwenhome.config import Timeouts
from qwenhome.errors import EXIT_NETWORK, ReadTimeoutError
from qwenhome.net import HttpClient
from tests.conftest import RunCli
from tests.support.mirror import Mirror


@contextlib.contextmanager
def trickling_server(head: bytes, every: float) -> Iterator[str]:
    """Answers ``head``, then one body byte every ``every`` seconds, forever."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(head)
                while not stop.wait(every):
                    conn.sendall(b" ")
            except OSError:
                return

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()


def outcome_within(seconds: float, call: Callable[[], object]) -> BaseException | None:
    """What ``call`` raised (None if it returned), failing the test when it
    has not ended within ``seconds`` (it then runs on in a daemon thread)."""
    box: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            box.append(None)
        except BaseException as exc:  # handed to the test
            box.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert box, f"still reading after {seconds} s: bounded by the body's length, not by time"
    return box[0]


def test_a_body_trickled_a_byte_at_a_time_times_out() -> None:
    http = HttpClient(Timeouts(connect=2.0, read=1.0))
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    with trickling_server(head, every=0.2) as url:
        exc = outcome_within(5, lambda: http.open("GET", f"{url}/api/models/Org/Name").read())
    assert isinstance(exc, ReadTimeoutError) and exc.code == "response-timeout", exc


def test_a_redirect_whose_body_trickles_times_out() -> None:
    http = HttpClient(Timeouts(connect=2.0, read=1.0))
    head = b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 100000\r\n\r\n"
    with trickling_server(head, every=0.2) as url:
        exc = outcome_within(5, lambda: http.open("GET", f"{url}/a"))
    assert isinstance(exc, ReadTimeoutError), exc


def test_a_slow_but_steady_body_is_read_whole() -> None:
    """The bound is per MiB: 3 MiB at about 1 MiB per 0.5 s (read time-out 1 s) arrive."""
    http = HttpClient(Timeouts(connect=2.0, read=1.0))
    size = 3 << 20
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            for _ in range(size // (64 << 10)):
                conn.sendall(b"x" * (64 << 10))
                time.sleep(0.03)

    threading.Thread(target=serve, daemon=True).start()
    with listener:
        body = http.open("GET", f"http://127.0.0.1:{listener.getsockname()[1]}/a").read()
    assert len(body) == size


def test_a_file_that_redirects_to_itself_forever_ends_in_too_many_redirects(
        run_cli: RunCli, qwen_home: Path, mirror: Mirror) -> None:
    """Every answer for the file is a 302 back to the file's own URL: the
    pull ends with error[too-many-redirects] after a bounded number of
    requests (it used to follow them forever: 270,000 requests in 150 s)."""
    (qwen_home / "qwenhome").mkdir()
    (qwen_home / "qwenhome" / "config.toml").write_text("[pull]\nmax_retries = 1\n")
    mirror.faults.respond(302, b"", path="config.json", headers={"Location": "config.json"})
    res = run_cli(["pull", "Org/Small"], endpoint=mirror.url, timeout=60)
    assert "Traceback" not in res.stderr and res.returncode == EXIT_NETWORK, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error[too-many-redirects]: ") and "config.json" in last, last
    assert len(mirror.faults.records("config.json")) < 200
