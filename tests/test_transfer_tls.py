"""HTTPS in the engine's event loop, against the project's mirror behind a TLS
front (a test CA): files move in the loop over kept-alive TLS connections,
cut connections are retried, and a certificate the client does not trust
fails the pull with the same error the threaded path gives."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import trustme

from qwenhome.config import Settings, load_settings
from qwenhome.errors import QwenhomeError
from qwenhome.mirror import FolderBackend, HashCache
from qwenhome.pull import pull
from qwenhome.store import RepoRef
from tests.support import tuning
from tests.support.mirror import Mirror, start_mirror
from tests.support.repos import GeneratedRepo
from tests.support.tls_front import TlsFront
from tests.test_pull import assert_snapshot_matches
from tests.test_transfer_loop import FAST


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def front(mirror: Mirror, ca: trustme.CA) -> Iterator[TlsFront]:
    with TlsFront(mirror.server.port, ca) as f:
        yield f


def tls_settings(home: Path, url: str, ca_file: Path | None) -> Settings:
    env = {"HOME": str(home.parent)}
    if ca_file is not None:
        env["SSL_CERT_FILE"] = str(ca_file)
    return load_settings(env, home=str(home), sources=[url])


def ca_file_of(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def test_https_ranges_move_in_the_event_loop(qwen_home: Path, tmp_path: Path, mirror: Mirror, front: TlsFront,
                                             ca: trustme.CA, big_repo: GeneratedRepo) -> None:
    result = pull(tls_settings(qwen_home, front.url, ca_file_of(ca, tmp_path)), RepoRef.parse("Org/Big"),
                  config=replace(FAST, connections=3))
    assert_snapshot_matches(qwen_home, big_repo)
    assert result.stats.get("threaded_files") == 0, result.stats
    gets = [r for r in mirror.faults.records() if r.file_path == "model.safetensors" and r.method == "GET"]
    assert len(gets) >= 23 and all(r.status == 206 for r in gets), "a 200 MB file in ranges of 8 MiB"
    # No range stalled and was asked again (records left in memory are read
    # without waiting for the socket).
    assert sum(r.bytes_sent for r in gets) == big_repo.files["model.safetensors"].size
    # Kept alive: a handshake per connection, not per range (plus the
    # metadata's: the listing, the HEAD, and the Xet token asked beside it).
    assert front.handshakes <= 3 + 3, front.handshakes


def test_decrypted_bytes_waiting_are_served_when_turns_end_early(qwen_home: Path, tmp_path: Path,
                                                                mirror: Mirror, front: TlsFront, ca: trustme.CA,
                                                                big_repo: GeneratedRepo,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads of 16 KiB (so a read often stops inside a TLS record, and its
    decrypted rest waits in OpenSSL) and turns that end after one event: a
    connection with bytes waiting keeps its turn until it is served, or it
    would wait for a socket that has nothing more and stall."""
    from qwenhome.transfer import evloop

    monkeypatch.setattr(evloop, "_SLICE", 16 * 1024)
    monkeypatch.setattr(evloop, "_TURN", 0.0)
    pull(tls_settings(qwen_home, front.url, ca_file_of(ca, tmp_path)), RepoRef.parse("Org/Big"),
         config=tuning.ranges(replace(FAST, connections=8), 1 << 20))
    assert_snapshot_matches(qwen_home, big_repo)
    gets = [r for r in mirror.faults.records() if r.file_path == "model.safetensors" and r.method == "GET"]
    assert sum(r.bytes_sent for r in gets) == big_repo.files["model.safetensors"].size, "no range stalled"


def test_cut_tls_connections_are_retried_in_the_loop(qwen_home: Path, tmp_path: Path, mirror: Mirror,
                                                     front: TlsFront, ca: trustme.CA,
                                                     big_repo: GeneratedRepo) -> None:
    """The backend drops three bodies part way: the front drops those TLS
    connections (no close_notify); the ranges are asked again and the file is
    still fetched in the loop, verified."""
    mirror.faults.drop_after(300_000, path="model.safetensors", times=3)
    result = pull(tls_settings(qwen_home, front.url, ca_file_of(ca, tmp_path)), RepoRef.parse("Org/Big"),
                  config=replace(FAST, connections=4))
    assert_snapshot_matches(qwen_home, big_repo)
    assert result.stats.get("threaded_files") == 0, result.stats
    size = big_repo.files["model.safetensors"].size
    sent = sum(r.bytes_sent for r in mirror.faults.records() if r.file_path == "model.safetensors")
    assert sent <= size + 3 * 8 * 2**20, "only the cut ranges' rest is asked again"


def test_a_redirect_from_https_to_the_cdn_is_followed_once(qwen_home: Path, tmp_path: Path, repos_root: Path,
                                                          hash_cache: HashCache, ca: trustme.CA,
                                                          big_repo: GeneratedRepo) -> None:
    """As on the Hub: ``resolve`` over HTTPS answers 302 to a signed CDN URL
    (here plain HTTP on another host name); one range learns it, the rest go
    straight there, all in the loop."""
    with start_mirror(FolderBackend(repos_root, hashes=hash_cache), redirect_lfs=True) as m, \
            TlsFront(m.server.port, ca) as f:
        result = pull(tls_settings(qwen_home, f.url, ca_file_of(ca, tmp_path)), RepoRef.parse("Org/Big"),
                      config=FAST)
        records = [r for r in m.faults.records() if r.file_path == "model.safetensors" and r.method == "GET"]
    assert_snapshot_matches(qwen_home, big_repo)
    assert result.stats.get("threaded_files") == 0, result.stats
    resolves = [r for r in records if "/resolve/" in r.path]
    cdn = [r for r in records if r.path.startswith("/cdn/")]
    assert len(resolves) == 1 and resolves[0].status == 302, resolves
    assert len(cdn) >= 23


def test_an_untrusted_certificate_says_tls_and_how_to_fix_it(qwen_home: Path, mirror: Mirror,
                                                             front: TlsFront) -> None:
    """No CA file: the front's certificate is not trusted. The network check
    already refuses it: the error names the TLS failure and the fix, not
    "go online"."""
    with pytest.raises(QwenhomeError) as info:
        pull(tls_settings(qwen_home, front.url, None), RepoRef.parse("Org/Big"), config=FAST)
    assert info.value.code == "offline"
    assert "tls-verification-failed" in info.value.message
    assert "SSL_CERT_FILE" in (info.value.hint or "") and "doctor" in (info.value.hint or "")
    assert not mirror.faults.records(path="model.safetensors")


def test_a_handshake_the_loop_cannot_make_goes_to_the_threads(tmp_path: Path, mirror: Mirror, front: TlsFront,
                                                              big_repo: GeneratedRepo) -> None:
    """The engine alone, without the CA: the loop's handshake fails, the file
    goes to the worker threads, and they report the verification failure
    with its stable code (the same error as any other request)."""
    from qwenhome.config import Source
    from qwenhome.net import HttpClient
    from qwenhome.transfer.engine import Candidate, FileJob, TransferEngine

    info = big_repo.files["model.safetensors"]
    source = Source("front", "hf", front.url)
    job = FileJob(info.sha256, "model.safetensors", info.size, info.sha256, None,
                  [Candidate(source, f"{front.url}/Org/Big/resolve/main/model.safetensors")],
                  tmp_path / "model.part")
    engine = TransferEngine(HttpClient(env={}), replace(FAST, connections=2, max_retries=1))
    errors = engine.run([job], on_verified=lambda job: None)
    assert errors[job.key].code == "tls-verification-failed", errors
    assert engine.stats["threaded_files"] == 1
    assert front.failed_handshakes >= 2, "the loop tried, then the threads"
    assert not mirror.faults.records(path="model.safetensors")


def test_a_connection_keeps_its_extra_turn_until_it_is_served() -> None:
    """The same rule, exactly: a turn that ends before it reaches a connection
    with decrypted bytes waiting leaves it in the set for the next turn."""
    import selectors
    import socket
    import time
    from typing import Any, cast

    from qwenhome.net import Origin
    from qwenhome.transfer import conns

    a, b = socket.socketpair()
    pool = conns.Pool(time.monotonic)  # an event loop's connections
    try:
        conn = conns.Conn(a, Origin("https", "127.0.0.1", 443), 0.0)
        conn.r = cast(Any, object())  # a range in flight
        pool.sel.register(a, selectors.EVENT_READ, conn)
        pool.again.add(conn)
        assert [key.data for key, _ in pool.pending([])] == [conn]
        assert [key.data for key, _ in pool.pending([])] == [conn], "not served yet: still due"
        conn.r = None  # its range ended: an idle connection waits for select
        assert pool.pending([]) == [] and conn not in pool.again
    finally:
        pool.sel.close()
        a.close()
        b.close()
