"""``qwenhome mirror serve --max-connections N --head-timeout SECONDS`` as a
real process: the (N+1)th connection, when N carry requests, gets a quick
503; a request head still coming after SECONDS is cut; numbers out of range
or not plain ASCII digits end the command with the usage line."""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import RunCli, clean_env
from tests.support.http import drip_head, request
from tests.test_mirror_cli import serve, stop

BODY = b'{"a": 1}\n'
RESOLVE = "/Org/Small/resolve/main/"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    repo = tmp_path / "repos" / "Org" / "Small"
    repo.mkdir(parents=True)
    (repo / "config.json").write_bytes(BODY)
    (repo / "big.bin").write_bytes(b"\0" * (64 << 20))  # more than the sockets' buffers hold
    return tmp_path / "repos"


def start(root: Path, home: Path, *flags: str,
          preexec: Callable[[], None] | None = None) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """``mirror serve --repos ROOT FLAGS`` started, and its listening event."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "qwenhome", "mirror", "serve", "--port", "0", "--json", "--no-xet",
         "--repos", str(root), *flags],
        env=clean_env(home), cwd=home.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=preexec)
    assert proc.stdout is not None
    text = ""
    while True:  # (the event is pretty-printed over several lines)
        line = proc.stdout.readline()
        if not line:
            proc.kill()
            pytest.fail(f"the mirror did not start: {proc.stderr.read() if proc.stderr else ''}")
        text += line
        with contextlib.suppress(json.JSONDecodeError):
            return proc, json.loads(text)


@contextlib.contextmanager
def serving(root: Path, home: Path, *flags: str) -> Iterator[str]:
    proc, url = serve(["--repos", str(root), *flags], home)
    try:
        yield url
    finally:
        assert stop(proc) == 0


def busy(port: int) -> socket.socket:
    """A connection whose request stays under way: a big body no one reads
    (its answer has begun: the request holds its slot)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(f"GET {RESOLVE}big.bin HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    status = sock.recv(12)
    assert status == b"HTTP/1.1 200", status
    return sock


def served_again(url: str) -> bytes:
    """config.json once the closed connections' slots are free (their threads
    see the peer gone at their next send)."""
    deadline = time.monotonic() + 5
    while (resp := request(url, path=f"{RESOLVE}config.json")).status == 503 and time.monotonic() < deadline:
        time.sleep(0.1)
    return resp.body


@pytest.mark.parametrize("n", [2, 3])
def test_the_connection_past_max_connections_gets_a_quick_503(root: Path, qwen_home: Path, n: int) -> None:
    with serving(root, qwen_home, "--max-connections", str(n)) as url:
        port = int(url.rsplit(":", 1)[1])
        held: list[socket.socket] = []
        try:
            held += [busy(port) for _ in range(n - 1)]
            under = request(url, path=f"{RESOLVE}config.json")  # the Nth: served
            time.sleep(0.3)  # (its thread leaves once it sees the close)
            held.append(busy(port))
            t0 = time.monotonic()
            past = request(url, path=f"{RESOLVE}config.json")  # the (N+1)th
            elapsed = time.monotonic() - t0
        finally:
            for sock in held:
                sock.close()
        assert served_again(url) == BODY, "the slots came back"
    assert under.status == 200 and under.body == BODY, under.status
    assert past.status == 503, past.status
    assert "connections" in json.loads(past.body)["error"] and past.header("Retry-After")
    assert elapsed < 1.0, elapsed


def test_a_request_head_still_coming_after_head_timeout_is_cut(root: Path, qwen_home: Path) -> None:
    with serving(root, qwen_home, "--head-timeout", "1.5") as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            head = f"GET {RESOLVE}config.json HTTP/1.1\r\nHost: x\r\nX-Pad: ".encode() + b"y" * 200
            cut = drip_head(sock, head)  # a byte every 0.05 s: 13 s in all
            assert cut is not None, "the mirror still read the head after 13 s"
            with contextlib.suppress(OSError):
                assert b"200 OK" not in sock.recv(65536)
        assert request(url, path=f"{RESOLVE}config.json").body == BODY, "a head sent at once is served"
    assert 1.0 < cut < 4.0, cut  # (the default, 10 s, would still be reading)


@pytest.mark.parametrize(("option", "value"), [
    ("--max-connections", "0"), ("--max-connections", "-1"), ("--max-connections", "4097"),
    ("--max-connections", "9" * 5000), ("--max-connections", "2.5"), ("--max-connections", "1_0"),
    ("--max-connections", "\uff11\uff12"), ("--max-connections", " 8"), ("--max-connections", "x"),
    ("--head-timeout", "0"), ("--head-timeout", "0.05"), ("--head-timeout", "-1"), ("--head-timeout", "3601"),
    ("--head-timeout", "nan"), ("--head-timeout", "inf"), ("--head-timeout", "1e3"), ("--head-timeout", "1_0"),
    ("--head-timeout", "\u0661"), ("--head-timeout", "10 "), ("--head-timeout", ""),
])
def test_bad_limits_end_mirror_serve_with_the_usage_line(option: str, value: str, run_cli: RunCli,
                                                         root: Path) -> None:
    try:
        rc, out, err = run_cli(["mirror", "serve", "--port", "0", "--no-xet", "--repos", str(root), option, value],
                               timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"mirror serve {option} {value[:20]!r} was taken: it served")
    assert rc == 2 and out == "", err
    assert "Traceback" not in err and err.startswith("usage: qwenhome mirror serve "), err
    last = err.splitlines()[-1]
    assert last.startswith(f"error[usage]: qwenhome mirror serve: argument {option}: "), last
    assert "(hint: qwenhome mirror serve --help)" in last, last


def test_in_range_limits_are_taken(root: Path, qwen_home: Path) -> None:
    proc, event = start(root, qwen_home, "--max-connections", "4096", "--head-timeout", "0.1")
    try:
        assert event["limits"] == {"max_connections": 4096, "head_timeout": 0.1}, event
        assert request(event["url"], path=f"{RESOLVE}config.json").body == BODY
    finally:
        assert stop(proc) == 0
    proc, event = start(root, qwen_home)
    assert stop(proc) == 0
    assert event["limits"] == {"max_connections": 256, "head_timeout": 10.0}, event


def test_a_cap_past_the_descriptor_limit_is_lowered_to_fit(root: Path, qwen_home: Path) -> None:
    """Under a hard limit of 256 open files, --max-connections 4096 would let
    the listener run out of descriptors: it would spin on its socket while
    newcomers wait unanswered. The cap is lowered to fit (with a warning), so
    300 idle connections still leave room for a request."""
    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    proc, event = start(root, qwen_home, "--max-connections", "4096", preexec=low_limit)
    idle: list[socket.socket] = []
    try:
        assert event["limits"] == {"max_connections": 64, "head_timeout": 10.0}, event
        port = int(event["url"].rsplit(":", 1)[1])
        idle += [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(300)]
        time.sleep(0.5)
        t0 = time.monotonic()
        resp = request(event["url"], path=f"{RESOLVE}config.json", timeout=5)
        elapsed = time.monotonic() - t0
    finally:
        for sock in idle:
            sock.close()
        rc = stop(proc)
    assert resp.status == 200 and resp.body == BODY, resp.status
    assert elapsed < 2, elapsed
    assert rc == 0
    err = proc.stderr.read() if proc.stderr else ""
    assert "serving at most 64 connections a port, not 4096" in err and "ulimit -n" in err, err
    assert "Traceback" not in err, err
