"""A server that sends its status line and headers a byte at a time (never
silent long enough for the read time-out) is cut off after a total bound
with ``response-timeout``, in the client and in a pull from the command
line; a head that comes at once, after a wait, is still taken."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from qwenhome.config import Timeouts
from qwenhome.errors import ReadTimeoutError
from qwenhome.net import HttpClient
from tests.support.cli import RunCli
from tests.support.rawserver import canned_server

HEAD = b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"y" * 40) for i in range(40)) + \
    b"Content-Length: 2\r\n\r\nok"


def test_a_head_dripped_a_byte_at_a_time_is_cut_after_the_read_time_out() -> None:
    client = HttpClient(Timeouts(read=1.0), env={})
    with canned_server(HEAD, drip=0.05) as url:  # 0.05 s between bytes: the head would take 100 s
        t0 = time.monotonic()
        with pytest.raises(ReadTimeoutError) as info:
            client.open("GET", f"{url}/x")
        elapsed = time.monotonic() - t0
    port = url.rsplit(":", 1)[1]
    assert info.value.code == "response-timeout"
    assert f"127.0.0.1:{port} did not send its answer's head within 1 s" in str(info.value), info.value
    assert elapsed < 3, elapsed
    client.close()


def test_a_short_head_dripped_within_the_bound_is_taken() -> None:
    """Read in many small pieces, the head still parses: status, headers, body."""
    client = HttpClient(Timeouts(read=1.0), env={})
    with canned_server(b"HTTP/1.1 200 OK\r\nX-A: b\r\nContent-Length: 2\r\n\r\nok", drip=0.01) as url:
        resp = client.open("GET", f"{url}/x")
        assert resp.status == 200 and resp.header("X-A") == "b" and resp.read() == b"ok"
    client.close()


def test_a_pull_from_a_server_dripping_its_heads_fails_with_response_timeout(
        run_cli: RunCli, qwen_home: Path) -> None:
    config = qwen_home / "qwenhome" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("[network]\nread_timeout = 1\n[pull]\nmax_retries = 1\n")
    with canned_server(HEAD, drip=0.05) as url:
        rc, _, err = run_cli(["pull", "Org/Small", "--source", url], timeout=60)
    last = err.strip().splitlines()[-1]
    assert last.startswith("error[response-timeout]"), err
    assert "did not send its answer's head within 1 s" in last, last
    assert rc == 5, err
