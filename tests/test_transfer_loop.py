"""The engine's event loop against the project's Hub-protocol server: it keeps
to its connection count over keep-alive connections, follows CDN redirects
once per file, and hands what it does not speak to the worker threads."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import cast

from qwenhome.mirror import FolderBackend, HashCache
from qwenhome.pull import pull
from qwenhome.store import RepoRef
from qwenhome.transfer import EngineConfig
from qwenhome.transfer.conns import Gather
from qwenhome.transfer.retry import Backoff
from qwenhome.transfer.scheduler import Splits
from qwenhome.transfer.sizing import RangeSizer, Sizes
from tests.support import tuning
from tests.support.mirror import Mirror, start_mirror
from tests.support.repos import GeneratedRepo, make_repo
from tests.test_pull import assert_snapshot_matches, settings_for

FAST = tuning.ranges(EngineConfig(stall_timeout=1.0, backoff=Backoff(base=0.05, cap=0.5), max_retries=6), 8 << 20)


def test_loop_keeps_to_its_connections_and_reuses_them(qwen_home: Path, mirror: Mirror,
                                                       big_repo: GeneratedRepo) -> None:
    pull(settings_for(qwen_home, mirror.url), RepoRef.parse("Org/Big"), config=replace(FAST, connections=3))
    assert_snapshot_matches(qwen_home, big_repo)
    gets = [r for r in mirror.faults.records() if r.file_path and r.method == "GET"]
    conns = {r.connection_id for r in gets}
    assert len(conns) <= 3, conns
    assert len(gets) >= 23, "a 200 MB file in ranges of at most 8 MiB"
    assert max(r.request_no for r in gets) > 1, "keep-alive connections carry several ranges"
    assert all(r.status == 206 for r in gets if r.file_path == "model.safetensors")


def test_loop_follows_a_cdn_redirect_once_per_file(qwen_home: Path, repos_root: Path, hash_cache: HashCache,
                                                   big_repo: GeneratedRepo) -> None:
    with start_mirror(FolderBackend(repos_root, hashes=hash_cache), redirect_lfs=True) as m:
        pull(settings_for(qwen_home, m.url), RepoRef.parse("Org/Big"), config=FAST)
        records = [r for r in m.faults.records() if r.file_path == "model.safetensors" and r.method == "GET"]
    assert_snapshot_matches(qwen_home, big_repo)
    resolves = [r for r in records if "/resolve/" in r.path]
    cdn = [r for r in records if r.path.startswith("/cdn/")]
    assert resolves and all(r.status == 302 for r in resolves)
    # One range asks first, and the signed URL it learns is remembered: every
    # other range (about 25 connections start this pull) goes straight to it.
    assert len(cdn) >= 23 and len(resolves) == 1, (len(resolves), len(cdn))
    assert sum(r.bytes_sent for r in cdn) <= 1.1 * big_repo.files["model.safetensors"].size


def test_loop_hands_an_ignored_range_to_the_threads(qwen_home: Path, mirror: Mirror, repos_root: Path,
                                                    small_repo: GeneratedRepo) -> None:
    """A server that once answers a ranged GET with the whole file (200): the
    loop does not take that body for the range; the file goes to the worker
    threads, which finish it verified."""
    whole = (repos_root / "Org/Small/model.safetensors").read_bytes()
    mirror.faults.respond(200, whole, path="model.safetensors", times=1, content_type="application/octet-stream",
                          predicate=lambda info: bool(info.range) and not str(info.range).startswith("bytes=0-"))
    config = tuning.ranges(replace(FAST, connections=2), 1 << 20)
    pull(settings_for(qwen_home, mirror.url), RepoRef.parse("Org/Small"), config=config)
    assert_snapshot_matches(qwen_home, small_repo)
    gets = [r for r in mirror.faults.records() if r.file_path == "model.safetensors" and r.method == "GET"]
    assert any(r.status == 200 for r in gets), "the whole-file answer was sent"
    assert sum(r.status == 206 for r in gets) >= 5, "the file was still fetched in ranges"


def test_a_slow_range_holding_the_prefix_is_split(qwen_home: Path, mirror: Mirror, big_repo: GeneratedRepo) -> None:
    """The first range stalls after 1 MB: the hash cannot pass it,
    so once more than ``hash_lag`` lies beyond it, its remaining half goes to
    another connection instead of new bytes further on."""
    # 0.9 s: over before the end-game would call the range an outlier (after 1 s).
    mirror.faults.stall(1_000_000, 0.9, times=1, path="model.safetensors")
    config = tuning.tuned(replace(FAST, stall_timeout=10.0, connections=4), splits=Splits(hash_lag=16 << 20))
    pull(settings_for(qwen_home, mirror.url), RepoRef.parse("Org/Big"), config=config)
    assert_snapshot_matches(qwen_home, big_repo)
    starts = [int(str(r.range).split("=")[1].split("-")[0]) for r in mirror.faults.records()
              if r.file_path == "model.safetensors" and r.method == "GET" and r.range]
    chunk = FAST.tuning.sizes.chunk_max
    # Ranges start at multiples of 8 MiB, but for the stalled range's second
    # half (whichever range the server stalled: the first to arrive) and the
    # run's last 32 MiB, cut into equal shares.
    assert any(s % chunk and s < 100_000_000 for s in starts), sorted(starts)[:8]
    assert mirror.faults.bytes_sent("model.safetensors") <= 1.1 * big_repo.files["model.safetensors"].size


def _range_of(header: str | None) -> tuple[int, int]:
    first, last = str(header).split("=")[1].split("-")
    return int(first), int(last) + 1


def test_the_first_wave_of_ranges_grows_from_small(qwen_home: Path, mirror: Mirror, big_repo: GeneratedRepo) -> None:
    """The connections a pull starts with begin together; ranges of one size
    would land together, with the hash idle until then. The first wave grows
    from small to full, so the written prefix (and the hash) move at once."""
    pull(settings_for(qwen_home, mirror.url), RepoRef.parse("Org/Big"), config=FAST)
    assert_snapshot_matches(qwen_home, big_repo)
    spans = sorted(_range_of(r.range) for r in mirror.faults.records()
                   if r.file_path == "model.safetensors" and r.method == "GET")
    lengths = [e - s for s, e in spans]
    chunk = FAST.tuning.sizes.chunk_max
    assert spans[0][0] == 0 and lengths[0] <= chunk // 4, spans[:3]
    wave = lengths[:8]  # by offset: the order they were cut in
    assert wave == sorted(wave) and wave[-1] > wave[0], wave


def test_small_files_are_asked_for_during_the_large_ones(qwen_home: Path, mirror: Mirror,
                                                         repos_root: Path) -> None:
    """Largest files first, but every other range goes to the smallest file
    waiting: small files (a round trip each) overlap the large file's transfer
    instead of queueing up after it, where their latency adds up."""
    small = {f"shard/{i:02d}.json": 10_000 + i for i in range(24)}
    repo = make_repo(repos_root, "Org/Mixed", {"model.safetensors": 40 << 20, **small}, seed=21)
    pull(settings_for(qwen_home, mirror.url), RepoRef.parse("Org/Mixed"),
         config=tuning.ranges(replace(FAST, connections=4), 2 << 20))
    assert_snapshot_matches(qwen_home, repo)
    gets = sorted((r for r in mirror.faults.records() if r.file_path and r.method == "GET"), key=lambda r: r.started)
    last_big = max(r.started for r in gets if r.file_path == "model.safetensors")
    early = [r.file_path for r in gets if r.file_path in small and r.started < last_big]
    assert len(early) >= len(small) // 2, early


def test_an_http10_answer_keeps_its_connection_only_when_it_says_so() -> None:
    """HTTP/1.0 closes after each answer unless it says keep-alive (Python's
    http.server answers so by default): the loop must not pool such a
    connection and send the next range into a socket the server has closed."""
    from qwenhome.net.head import parse_head

    def keep(raw: bytes) -> bool:
        parsed = parse_head(raw)
        assert parsed is not None
        return parsed[0].keep_alive

    assert not keep(b"HTTP/1.0 206 Partial Content\r\nContent-Length: 3\r\n\r\nabc")
    assert keep(b"HTTP/1.0 206 Partial Content\r\nConnection: Keep-Alive\r\nContent-Length: 3\r\n\r\n")
    assert keep(b"HTTP/1.1 206 Partial Content\r\nContent-Length: 3\r\n\r\n")
    assert not keep(b"HTTP/1.1 206 Partial Content\r\nConnection: close\r\nContent-Length: 3\r\n\r\n")


def test_the_host_header_names_a_port_only_when_it_is_not_the_schemes_own() -> None:
    """HTTPS on 443 is ``Host: name`` (not ``name:443``, which a CDN's virtual
    hosts need not accept); an IPv6 address is bracketed."""
    from qwenhome.net import Origin

    assert Origin.of("https://cdn.example/f").authority == "cdn.example"
    assert Origin.of("http://cdn.example:80/f").authority == "cdn.example"
    assert Origin.of("https://cdn.example:8443/f").authority == "cdn.example:8443"
    assert Origin.of("http://127.0.0.1:18020/f").authority == "127.0.0.1:18020"
    assert Origin.of("http://[::1]:8080/f").authority == "[::1]:8080"


def test_a_body_trickling_in_is_read_in_few_large_pieces(qwen_home: Path, mirror: Mirror, repos_root: Path) -> None:
    """A server that sends small pieces (here 50 KB every 50 ms) would cost a
    read per piece; with SO_RCVLOWAT the kernel reports the socket once a
    share of the connection's rate waits in it. The last bytes of the body,
    fewer than that share, must still be reported (no stall, no retry)."""
    sizes = {"a.bin": (2 << 20) + 12_345}
    mirror.faults.bandwidth(1_000_000)
    config = tuning.ranges(replace(FAST, connections=1, stall_timeout=5.0), 4 << 20)

    def reads(home: Path, name: str, gather: Gather) -> int:
        repo = make_repo(repos_root, f"Org/{name}", sizes, seed=len(name))
        result = pull(settings_for(home, mirror.url), RepoRef.parse(f"Org/{name}"),
                      config=tuning.tuned(config, gather=gather))
        assert_snapshot_matches(home, repo)
        gets = [r for r in mirror.faults.records() if r.file_path == "a.bin" and r.method == "GET"
                and f"/Org/{name}/" in r.path]
        assert len(gets) == 1 and gets[0].status == 206, [(r.status, r.range) for r in gets]
        return int(cast(dict[str, int], result.stats)["loop_reads"])

    gathered = reads(qwen_home, "Gathered", Gather(seconds=0.25))
    every_piece = reads(qwen_home, "EveryPiece", Gather(most=0))
    assert every_piece >= 30, every_piece  # about one read per 50 KB piece
    # (The gathered share grows from the body's first bytes: a few reads ramp up.)
    assert gathered * 2 <= every_piece, (gathered, every_piece)


def test_bytes_waiting_below_the_gathered_share_are_not_a_stall() -> None:
    """The socket gathers bytes before select reports it; a link that slowed
    after its first burst may leave fewer than that waiting for longer than
    the stall timeout. Bytes waiting are not a stall: the stall check takes
    the socket back to reporting every byte, and the range goes on."""
    import os
    import socket
    import time

    from qwenhome.net import HttpClient, Origin
    from qwenhome.transfer.conns import BODY, Conn
    from qwenhome.transfer.controller import Controller, Steps
    from qwenhome.transfer.evloop import IoLoop
    from qwenhome.transfer.hasher import Hasher
    from qwenhome.transfer.run import Run
    from qwenhome.transfer.state import State
    from qwenhome.transfer.work import Span

    state = State([], Controller(Steps(), RangeSizer()))
    loop = IoLoop(Run(HttpClient(env={}), state, Hasher(state, lambda _job: None), stall_timeout=1.0))
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    peer, _ = server.accept()
    try:
        now = time.monotonic()
        conn = Conn(client, Origin.of(f"http://127.0.0.1:{server.getsockname()[1]}/f"), now - 5.0)
        conn.state, conn.r = BODY, cast(Span, object())
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 64 * 1024)
        conn.lowat = 64 * 1024
        loop.busy.add(conn)
        assert not conn.has_bytes()
        peer.sendall(b"x" * 1000)
        deadline = time.monotonic() + 5
        while not conn.has_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)
        loop._check_stalls(now)
        assert conn.r is not None and conn in loop.busy, "taken for a stall"
        assert conn.lowat == 1 and conn.last == now
        assert client.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 1
    finally:
        for s in (client, peer, server):
            s.close()
        loop.pool.sel.close()
        for fd in loop.pipe:
            os.close(fd)


def test_ranges_last_many_request_round_trips(qwen_home: Path, mirror: Mirror, repos_root: Path) -> None:
    """The loop measures how long a request on a reused connection waits for
    its answer's first byte; ranges are then sized to last many such round
    trips, so that behind latency the gaps between a connection's ranges do
    not eat its throughput. Without a measure, the in-flight bound rules."""
    repo = make_repo(repos_root, "Org/Latent", {"a.bin": 6 << 20}, seed=7)
    mirror.faults.latency(0.08, times=None, path="a.bin", method="GET")
    config = tuning.ranges(replace(FAST, connections=1), 1 << 20)
    result = pull(settings_for(qwen_home, mirror.url), RepoRef.parse("Org/Latent"), config=config)
    assert_snapshot_matches(qwen_home, repo)
    measured = cast(dict[str, int], result.stats)["request_ms"]
    assert 80 <= measured < 1000, measured

    sizes = Sizes()
    sizer = RangeSizer(sizes)
    sizer.resize(10e6, 32, server_bound=False)  # no round trip measured yet: 64 MiB in flight over 32
    assert sizer.chunk == sizes.in_flight // 32
    sizer.note_ttfb(measured / 1000)
    sizer.resize(10e6, 32, server_bound=False)  # 10 MB/s for 16 round trips of 80 ms or more
    assert 10e6 * sizes.request_ranges * 0.08 <= sizer.chunk <= sizes.chunk_max, sizer.chunk


def test_the_end_of_a_run_is_shared_in_few_requests(qwen_home: Path, mirror: Mirror, repos_root: Path) -> None:
    """Near the end the bytes left are shared over the connections so that
    they end together; a share counts the bytes still under way, so ranges
    stay near full size instead of each taking a quarter of what is not yet
    handed out (ever smaller requests, each costing a busy server as much
    as its body)."""
    repo = make_repo(repos_root, "Org/Shared", {"a.bin": 40 << 20}, seed=11)
    config = tuning.ranges(replace(FAST, connections=4), 4 << 20, tail_min=256 << 10)
    pull(settings_for(qwen_home, mirror.url), RepoRef.parse("Org/Shared"), config=config)
    assert_snapshot_matches(qwen_home, repo)
    ranges = [r.range for r in mirror.faults.records(path="a.bin", method="GET")]
    # 40 MiB in 4 MiB ranges is 10; the first four grow from 1 MiB to 4, the
    # last wave is cut to end together, and an end-game may ask a range
    # twice: 12-14 here. (A quarter of what was not yet handed out: 22.)
    assert len(ranges) <= 17, ranges
