"""The mirror under clients that hold connections: a request head sent a
byte at a time is cut after a bound (slow-loris), a flood of idle
connections does not keep a normal request waiting (the oldest idle ones
make room under the connection cap), and when every slot carries a request
the next connection gets a quick 503. Methods it does not know (OPTIONS,
TRACE, made-up ones) get the same JSON 405 as writes."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qwenhome.mirror import FolderBackend, MirrorServer
from tests.support.http import drip_head, request

BODY = b'{"a": 1}\n'


@pytest.fixture
def root(tmp_path: Path) -> Path:
    repo = tmp_path / "repos" / "Org" / "Small"
    repo.mkdir(parents=True)
    (repo / "config.json").write_bytes(BODY)
    return tmp_path / "repos"


@contextlib.contextmanager
def serving(root: Path, **kwargs: float) -> Iterator[MirrorServer]:
    server = MirrorServer(FolderBackend(root), **kwargs).start()  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()


def test_a_request_head_sent_a_byte_at_a_time_is_cut_after_the_bound(root: Path) -> None:
    with serving(root, head_timeout=1.0) as server, \
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        head = b"GET /Org/Small/resolve/main/config.json HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"y" * 200
        cut = drip_head(sock, head)  # 13 s in all
        assert cut is not None, "the mirror still read the head after 13 s"
        assert cut < 3, cut
        with contextlib.suppress(OSError):
            assert b"200 OK" not in sock.recv(65536)


def test_idle_connections_do_not_keep_a_request_waiting(root: Path) -> None:
    with serving(root, max_connections=8) as server:
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(40)]
        for i, sock in enumerate(idle):
            if i % 2:
                sock.sendall(b"GET /api/models HTTP/1.1\r\nHo")  # half a head: slow-loris
        try:
            time.sleep(0.3)
            t0 = time.monotonic()
            resp = request(server.url, path="/Org/Small/resolve/main/config.json")
            elapsed = time.monotonic() - t0
            time.sleep(0.2)
            closed = sum(1 for sock in idle if select.select([sock], [], [], 0)[0] and sock.recv(1) == b"")
        finally:
            for sock in idle:
                sock.close()
    assert resp.status == 200 and resp.body == BODY
    assert elapsed < 1.0, elapsed
    assert closed >= 40 - 8 + 1, f"only {closed} of the 40 idle connections were closed: no cap"


def test_when_every_slot_carries_a_request_the_next_connection_gets_a_quick_503(root: Path) -> None:
    big = root / "Org" / "Small" / "big.bin"
    big.write_bytes(b"\0" * (64 << 20))
    with serving(root, max_connections=2) as server:
        readers = []
        for _ in range(2):  # bodies no one reads: their requests stay under way
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(b"GET /Org/Small/resolve/main/big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
            readers.append(sock)
        try:
            time.sleep(0.5)
            t0 = time.monotonic()
            resp = request(server.url, path="/Org/Small/resolve/main/config.json")
            elapsed = time.monotonic() - t0
        finally:
            for sock in readers:
                sock.close()
    assert resp.status == 503, resp.status
    assert "connections" in json.loads(resp.body)["error"]
    assert resp.header("Retry-After")
    assert elapsed < 1.0, elapsed


@pytest.mark.parametrize("method", ["OPTIONS", "TRACE", "CONNECT", "PROPFIND", "FOO"])
def test_methods_the_mirror_does_not_know_get_a_json_405(root: Path, method: str) -> None:
    with serving(root) as server:
        resp = request(server.url, method, "/Org/Small/resolve/main/config.json")
        assert resp.status == 405, resp.status
        assert resp.header("Allow") == "GET, HEAD"
        assert "read-only" in json.loads(resp.body)["error"]
        assert request(server.url, path="/Org/Small/resolve/main/config.json").body == BODY


@pytest.mark.parametrize("query", ["limit=0", "limit=-1", f"limit={'9' * 5000}", "limit=%EF%BC%91"])
def test_listing_limits_get_an_answer(root: Path, query: str) -> None:
    with serving(root) as server:
        for route in ("/api/models", "/api/models/Org/Small/tree/main"):
            resp = request(server.url, path=f"{route}?{query}")
            assert resp.status in (200, 400), (route, query, resp.status)
            body = json.loads(resp.body)
            assert isinstance(body, list) or "limit" in body["error"], body
