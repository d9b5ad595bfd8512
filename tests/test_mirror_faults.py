"""Each fault of the test kit demonstrably happens, is count-based, and is logged."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time

import pytest

from tests.support.http import Connection, request
from tests.support.mirror import Mirror
from tests.support.repos import GeneratedRepo

WEIGHTS = "/Org/Small/resolve/main/model.safetensors"


def test_drop_after_n_bytes_cuts_the_body_once(mirror: Mirror, small_repo: GeneratedRepo) -> None:
    mirror.faults.drop_after(1_234_567, path="model.safetensors")
    with Connection(mirror.url) as conn:
        head, got, error = conn.read_body_until_error("GET", WEIGHTS)
    assert head.status == 200 and error is not None
    assert len(got) == 1_234_567
    assert got == (small_repo.path / "model.safetensors").read_bytes()[:1_234_567]
    first = mirror.faults.records("model.safetensors")[0]
    assert first.bytes_sent == 1_234_567 and first.error == "dropped by fault"
    again = request(mirror.url, path=WEIGHTS)  # count exhausted: served whole
    assert len(again.body) == small_repo.files["model.safetensors"].size


def test_drop_with_reset_makes_the_client_see_a_reset(mirror: Mirror) -> None:
    mirror.faults.drop_after(300_000, path="model.safetensors", reset=True)
    with socket.create_connection(("127.0.0.1", mirror.server.port), timeout=5) as sock:
        sock.sendall(f"GET {WEIGHTS} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        received = 0
        with pytest.raises(ConnectionResetError):
            while chunk := sock.recv(65536):
                received += len(chunk)
                time.sleep(0.001)  # let the reset overtake the buffered data
    assert received <= 300_000 + 1024
    assert mirror.faults.records()[0].bytes_sent == 300_000


def test_drop_applies_within_a_range_response(mirror: Mirror) -> None:
    mirror.faults.drop_after(100, path="model.safetensors")
    with Connection(mirror.url) as conn:
        head, got, error = conn.read_body_until_error("GET", WEIGHTS, {"Range": "bytes=1000-1999"})
    assert head.status == 206 and len(got) == 100 and error is not None
    assert mirror.faults.records()[0].range == "bytes=1000-1999"


def test_status_faults_for_first_k_requests_with_retry_after(mirror: Mirror) -> None:
    mirror.faults.fail(503, times=2, path="config.json", retry_after=3)
    mirror.faults.fail(429, times=1, path="/api/models/Org/Small/revision/main", retry_after=7)
    path = "/Org/Small/resolve/main/config.json"
    statuses = [request(mirror.url, path=path) for _ in range(3)]
    assert [r.status for r in statuses] == [503, 503, 200]
    assert statuses[0].header("Retry-After") == "3" and "error" in json.loads(statuses[0].body)
    limited = request(mirror.url, path="/api/models/Org/Small/revision/main")
    assert limited.status == 429 and limited.header("Retry-After") == "7"
    assert request(mirror.url, path="/api/models/Org/Small/revision/main").status == 200
    assert request(mirror.url, path="/Org/Small/resolve/main/empty.txt").status == 200  # other paths untouched


def test_global_500_then_recovery(mirror: Mirror) -> None:
    mirror.faults.fail(500, times=3)
    got = [request(mirror.url, path=f"/Org/Small/resolve/main/{p}").status
           for p in ("config.json", "empty.txt", "config.json", "config.json")]
    assert got == [500, 500, 500, 200]


def test_stall_sends_nothing_for_t_seconds_mid_body(mirror: Mirror) -> None:
    mirror.faults.stall(after_bytes=500_000, seconds=0.6, path="model.safetensors")
    with socket.create_connection(("127.0.0.1", mirror.server.port)) as sock:
        sock.sendall(f"GET {WEIGHTS} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        received = 0
        gaps = []
        last = time.monotonic()
        while received < 1_000_000:
            chunk = sock.recv(65536)
            assert chunk
            now = time.monotonic()
            gaps.append((received, now - last))
            last = now
            received += len(chunk)
    # Silence right after headers + 500 000 body bytes (other gaps may come from a busy machine).
    assert any(gap >= 0.5 for at, gap in gaps if 400_000 <= at <= 520_000), gaps


def test_stall_longer_than_client_timeout_times_it_out(mirror: Mirror) -> None:
    mirror.faults.stall(after_bytes=10_000, seconds=2.0, path="model.safetensors")
    with Connection(mirror.url, timeout=0.3) as conn:
        _, got, error = conn.read_body_until_error("GET", WEIGHTS)
    assert isinstance(error, TimeoutError) and 10_000 <= len(got) < 100_000
    mirror.faults.release()


def test_corrupt_flips_exactly_one_byte_when_range_covers_it(mirror: Mirror, small_repo: GeneratedRepo) -> None:
    data = (small_repo.path / "model.safetensors").read_bytes()
    mirror.faults.corrupt(4_000_000, path="model.safetensors")
    untouched = request(mirror.url, path=WEIGHTS, headers={"Range": "bytes=0-99"})
    assert untouched.body == data[:100]  # not covered: the fault is kept for a later body
    bad = request(mirror.url, path=WEIGHTS).body
    diff = [i for i in range(len(data)) if bad[i] != data[i]] if len(bad) == len(data) else None
    assert diff == [4_000_000]
    assert hashlib.sha256(request(mirror.url, path=WEIGHTS).body).digest() == hashlib.sha256(data).digest()


def test_latency_delays_the_first_byte(mirror: Mirror) -> None:
    mirror.faults.latency(0.4, times=1, path="config.json")
    t0 = time.monotonic()
    assert request(mirror.url, path="/Org/Small/resolve/main/config.json").status == 200
    slow = time.monotonic() - t0
    t0 = time.monotonic()
    request(mirror.url, path="/Org/Small/resolve/main/config.json")  # count used up: no delay
    assert slow >= 0.4 and time.monotonic() - t0 < slow


def test_bandwidth_limit_is_per_connection(mirror: Mirror) -> None:
    rate = 2_000_000
    mirror.faults.bandwidth(rate)
    n = 1_000_000
    durations: list[float] = []

    def fetch() -> None:
        t0 = time.monotonic()
        r = request(mirror.url, path=WEIGHTS, headers={"Range": f"bytes=0-{n - 1}"})
        assert len(r.body) == n
        durations.append(time.monotonic() - t0)

    threads = [threading.Thread(target=fetch) for _ in range(3)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    # Each connection is paced to ~rate (minus the initial burst); three run side by side.
    assert all(d >= 0.4 for d in durations), durations
    assert wall < 0.8 * sum(durations)  # concurrent, not serial: the limit is per connection


def test_lying_server_serves_forged_metadata_and_bodies(mirror: Mirror) -> None:
    forged = {"id": "Org/Small", "sha": "f" * 40, "siblings": [{"rfilename": "../evil", "size": 5}]}
    mirror.faults.respond_json(forged, path="/api/models/Org/Small/revision/main")
    mirror.faults.respond(200, b"not the real bytes", path="config.json", content_type="application/octet-stream",
                          headers={"X-Repo-Commit": "f" * 40, "ETag": '"' + "0" * 40 + '"'})
    assert json.loads(request(mirror.url, path="/api/models/Org/Small/revision/main").body) == forged
    r = request(mirror.url, path="/Org/Small/resolve/main/config.json")
    assert r.body == b"not the real bytes" and r.header("ETag") == '"' + "0" * 40 + '"'


def test_truncated_canned_body_drops_connection(mirror: Mirror) -> None:
    mirror.faults.respond(200, b"x" * 1000, path="config.json", truncate_to=10, times=1)
    with Connection(mirror.url) as conn:
        _, got, error = conn.read_body_until_error("GET", "/Org/Small/resolve/main/config.json")
    assert got == b"x" * 10 and error is not None
    assert mirror.faults.records()[0].bytes_sent == 10


def test_log_records_method_range_status_bytes_and_connection(mirror: Mirror) -> None:
    with Connection(mirror.url) as conn:
        conn.request("HEAD", WEIGHTS)
        conn.request("GET", WEIGHTS, {"Range": "bytes=10-29"})
    request(mirror.url, path="/Org/Small/resolve/main/nope")
    log = mirror.faults.records()
    assert [(r.method, r.range, r.status, r.request_no) for r in log] == [
        ("HEAD", None, 200, 1), ("GET", "bytes=10-29", 206, 2), ("GET", None, 404, 1)]
    assert [r.bytes_sent for r in log[:2]] == [0, 20] and log[2].bytes_sent > 0  # the JSON error body
    assert log[0].connection_id == log[1].connection_id != log[2].connection_id
    assert all(r.ended >= r.started for r in log)


def test_forged_repository_lists_unsafe_names_and_serves_wrong_bytes(mirror: Mirror) -> None:
    files = [{"path": "../evil", "size": 5}, {"path": "/etc/x", "size": 1}, {"path": "a/../../b", "size": 2},
             {"path": "C:\\x", "size": 3}, {"path": "nul\x00.txt", "size": 4},
             {"path": "w.bin", "size": 10, "sha256": "e" * 64}]
    mirror.faults.forge_repo("Org/Liar", files, commit="../../x", bodies={"w.bin": b"short"})
    info = json.loads(request(mirror.url, path="/api/models/Org/Liar/revision/main?blobs=true").body)
    assert info["sha"] == "../../x"
    assert [s["rfilename"] for s in info["siblings"]] == [f["path"] for f in files]
    tree = json.loads(request(mirror.url, path="/api/models/Org/Liar/tree/main?recursive=true").body)
    assert tree[-1]["lfs"]["oid"] == "e" * 64
    r = request(mirror.url, "GET", "/Org/Liar/resolve/main/w.bin")
    assert r.body == b"short" and r.header("X-Linked-Size") == "10" and r.header("ETag") == '"' + "e" * 64 + '"'
