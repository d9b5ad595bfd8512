"""qwenhome pulls Xet-backed files through the CAS, as real processes, from the
project's Xet server (``qwenhome mirror`` with Xet on, reconstructions and
xorbs on ports of their own): under faults, after ``kill -9``, reusing local
chunks for an updated revision, falling back to the bridge when the Xet hosts
are away, and alone when the bridge refuses. The mirror's byte counters say
which way the bytes came."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qwenhome.mirror import FolderBackend, StoreBackend
from qwenhome.transfer.xorbs import plan_items
from qwenhome.xet import XetAnswerError, chunk_hash, parse_reconstruction
from qwenhome.xet.chunking import iter_chunks
from qwenhome.xet.slicing import Slicer
from tests.support.cli import CliResult, clean_env, run_cli
from tests.support.faults import Faults, kind
from tests.support.mirror import Mirror, start_mirror
from tests.support.repos import GeneratedRepo, make_repo, make_store_repo, sha256_file
from tests.support.xet_mirror import (
    random_bytes,
    reconstruction,
    refuse_bridge,
    start_xet_mirror,
    token_for,
)

MiB = 1 << 20
MODEL = "model.safetensors"
SIZE = 24 * MiB + 5


def _compressible(n: int) -> bytes:
    text = b"".join(b"weight %d of a layer that compresses\n" % i for i in range(n // 30))
    return (text + random_bytes(n, 3))[:n]


@pytest.fixture(scope="module")
def xet_repo(tmp_path_factory: pytest.TempPathFactory) -> GeneratedRepo:
    root = tmp_path_factory.mktemp("xet-pull-repos")
    return make_repo(root, "Org/XetPull", {MODEL: random_bytes(SIZE, 1), "extra.bin": _compressible(3 * MiB + 1),
                                           "config.json": b'{"model_type": "qwen2"}\n'})


@pytest.fixture
def xm(xet_repo: GeneratedRepo, tmp_path: Path) -> Iterator[Mirror]:
    """The Xet server: the mirror with its CAS and its xorbs on ports of their own."""
    with start_xet_mirror(FolderBackend(xet_repo.root), tmp_path / "xet", cas_port=0, xorb_port=0) as m:
        yield m


def _home(tmp_path: Path, name: str = "home", stall: float = 2.0) -> Path:
    home = tmp_path / name
    (home / "qwenhome").mkdir(parents=True)
    (home / "qwenhome" / "config.toml").write_text(f"[network]\nstall_timeout = {stall}\n")
    return home


def pull(home: Path, m: Mirror, repo: str = "Org/XetPull", *args: str, env: dict[str, str] | None = None,
         timeout: float = 180) -> tuple[CliResult, dict[str, object]]:
    """``qwenhome pull --json`` in a subprocess: its result line (the last)."""
    res = run_cli(["pull", repo, "--json", *args], home=home, endpoint=m.url, env=env, timeout=timeout)
    assert res.returncode == 0, res.stderr[-3000:]
    return res, json.loads(res.stdout.strip().splitlines()[-1])


def sent(m: Mirror, route: str, path: str | None = None) -> int:
    """Body bytes the mirror sent on one kind of route (``xorb``, ``resolve``), in answers that carried content."""
    return sum(r.bytes_sent for r in m.faults.of_kind(route)
               if r.method == "GET" and r.status < 300 and (path is None or r.file_path == path))


def bridge_refuses(m: Mirror) -> None:
    """The resolve bridge refuses every body (403; HEAD still answers), as
    the Hub does for very large files: Xet alone serves them. (A Xet file's
    bytes otherwise come from xorbs and the bridge together: see
    tests/test_xet_mix.py.)"""
    refuse_bridge(m.faults)


def assert_pulled(home: Path, repo: GeneratedRepo, commit: str | None = None) -> Path:
    prefix = "models--" + repo.repo_id.replace("/", "--")
    snaps = home / "hub" / prefix / "snapshots"
    [snap] = [snaps / commit] if commit else list(snaps.iterdir())
    for rel, f in repo.files.items():
        assert sha256_file(snap / rel) == f.sha256, rel
    assert not list((home / "qwenhome" / "partials").glob("*.part")), "no partial file left"
    return snap


def test_pull_comes_through_xorbs_not_resolve_bodies_and_keeps_the_recipe(
        xm: Mirror, xet_repo: GeneratedRepo, tmp_path: Path) -> None:
    bridge_refuses(xm)
    home = _home(tmp_path)
    _, result = pull(home, xm)
    assert_pulled(home, xet_repo)
    lfs = {p: f for p, f in xet_repo.files.items() if f.lfs}
    assert sent(xm, "resolve", MODEL) == 0 and sent(xm, "resolve", "extra.bin") == 0
    xorb = sent(xm, "xorb")
    assert sum(f.size for f in lfs.values()) < xorb < 1.02 * sum(f.size for f in lfs.values())
    assert result["transfer"]["xet_bytes"] == xorb  # type: ignore[index]
    ports = {r.route_kind: r.server_port for r in xm.faults.records()}
    assert ports["reconstruction"] == xm.server.port_of("cas") and ports["xorb"] == xm.server.port_of("xorb")
    recipes = home / "qwenhome" / "xet" / "pulled"
    kept = {p.stem: json.loads(p.read_text()) for p in recipes.iterdir()}
    assert set(kept) == {f.sha256 for f in lfs.values()}
    # Every chunk's length was read from the xorbs: kept with the recipe, which stays small.
    assert all(sum(r["chunk_lengths"]) == r["size"] for r in kept.values())
    assert sum(p.stat().st_size for p in recipes.iterdir()) < 0.01 * sum(f.size for f in lfs.values())


def test_the_whole_files_answer_serves_its_parts_and_the_token_is_asked_beside_the_first_head(
        xm: Mirror, xet_repo: GeneratedRepo, tmp_path: Path) -> None:
    """Each file's whole reconstruction (asked for its recipe) gives the URLs
    of the parts the engine fetches: no reconstruction of a range follows.
    The token is asked where the Hub hands it while the first HEAD is out,
    and the other files' HEADs with it (a round trip each, before the first
    xorb byte)."""
    bridge_refuses(xm)
    xm.faults.latency(0.6, times=1, method="HEAD")
    home = _home(tmp_path)
    pull(home, xm)
    assert_pulled(home, xet_repo)
    recons = xm.faults.of_kind("reconstruction")
    tokens = xm.faults.of_kind("xet-read-token")
    wholes = [r for r in recons if r.range is None]
    assert len(wholes) == 2, [(r.path, r.range) for r in recons]
    # A piece that is a run of whole terms is never asked (until the bridge
    # is known to refuse, the first pieces Xet claims are trimmed to a few
    # MB, off the terms' bounds: those are asked).
    tok = token_for(xm.url, "Org/XetPull", "main")
    cuts = {r.path: Slicer(parse_reconstruction(reconstruction(tok, r.path.rsplit("/", 1)[1]).body)).cuts
            for r in wholes}
    asked = [(r.path, *map(int, r.range.removeprefix("bytes=").split("-"))) for r in recons if r.range]
    assert not [a for a in asked if a[1] in cuts[a[0]] and a[2] + 1 in cuts[a[0]]], asked
    assert sum(b + 1 - a for _, a, b in asked) < SIZE, asked  # (the rest came from the whole answers)
    heads = [r for r in xm.faults.records() if r.method == "HEAD"]
    head = min(heads, key=lambda r: r.started)
    [token] = tokens
    assert token.started < head.ended - 0.3, (token.started - head.started, head.ended - head.started)
    # Both files' HEADs go out at once: the second file's reconstruction is
    # not a round trip later than the first's.
    slow = max(heads, key=lambda r: r.ended - r.started)
    assert len(heads) == 2 and all(h.started < slow.ended - 0.3 for h in heads), \
        [(h.path, h.started - slow.started, h.ended - slow.started) for h in heads]


def test_compressed_xorbs_lz4_and_bg4_lz4_are_decoded_into_place(tmp_path: Path) -> None:
    """Xorbs compressed as the Hub's are (LZ4 frames, BG4-LZ4 for floats, raw
    where nothing shrinks): decoded chunk by chunk, fewer bytes on the wire."""
    import numpy as np

    floats = np.sin(np.arange(2 * MiB // 4, dtype=np.float32) / 50.0).astype(np.float32).tobytes()
    data = random_bytes(3 * MiB, 9) + floats + _compressible(3 * MiB) + bytes(MiB)
    repo = make_repo(tmp_path / "repos", "Org/Z", {"z.safetensors": data})
    with start_xet_mirror(FolderBackend(repo.root), tmp_path / "xet", compression="auto", cas_port=0,
                          xorb_port=0) as m:
        bridge_refuses(m)
        home = _home(tmp_path)
        pull(home, m, "Org/Z")
        assert sent(m, "resolve") == 0 and 0 < sent(m, "xorb") < 0.8 * len(data)
    assert_pulled(home, repo)


XET_FAULTS: dict[str, Callable[[Faults], object]] = {
    # The foundation's faults (tests/test_pull.py FAULTS), on the xorb bodies.
    "drop-mid-body": lambda f: f.drop_after(3_000_000, times=3, predicate=kind("xorb")),
    "http-500": lambda f: f.fail(500, times=3, predicate=kind("xorb")),
    "http-503-retry-after": lambda f: f.fail(503, times=2, retry_after=0.2, predicate=kind("xorb")),
    "http-429-retry-after": lambda f: f.fail(429, times=2, retry_after=0.2),
    "stall": lambda f: f.stall(1_000_000, 30.0, times=2, predicate=kind("xorb")),
    "corrupt-byte": lambda f: f.corrupt(4_000_000, times=1, predicate=kind("xorb")),
    "bandwidth-per-connection": lambda f: f.bandwidth(40_000_000),
    # And the Xet ones.
    "reconstruction-503": lambda f: f.fail(503, times=3, predicate=kind("reconstruction")),
    "corrupt-chunk-header": lambda f: f.corrupt(0, times=1, predicate=kind("xorb")),
}


@pytest.mark.parametrize("fault", sorted(XET_FAULTS))
def test_pull_through_xet_under_fault_ends_verified(fault: str, xm: Mirror, xet_repo: GeneratedRepo,
                                                    tmp_path: Path) -> None:
    XET_FAULTS[fault](xm.faults)
    bridge_refuses(xm)
    home = _home(tmp_path)
    res, _ = pull(home, xm)
    assert_pulled(home, xet_repo)
    events = [json.loads(line) for line in res.stdout.splitlines()]
    if fault != "bandwidth-per-connection":
        assert any(e.get("event") == "retry" for e in events), "the fault was hit and retried"
    size = sum(f.size for f in xet_repo.files.values() if f.lfs)
    # Through Xet: no resolve body. Only a corrupt byte in a payload (scheme
    # none: caught by the sha256 alone) costs the file once more.
    assert sent(xm, "resolve", MODEL) == 0
    limit = 2.1 if fault == "corrupt-byte" else 1.12
    assert sent(xm, "xorb") <= limit * size, (fault, sent(xm, "xorb"), size)


def test_an_expired_xorb_url_is_asked_again_from_the_reconstruction(xet_repo: GeneratedRepo,
                                                                    tmp_path: Path) -> None:
    """URLs live 2 s; the first xorb request waits 2.5 s: refused (403), then fresh URLs."""
    with start_xet_mirror(FolderBackend(xet_repo.root), tmp_path / "xet", url_ttl=2) as m:
        m.faults.latency(2.5, times=1, predicate=kind("xorb"))
        bridge_refuses(m)
        home = _home(tmp_path, stall=5)
        pull(home, m)
        xorbs = [r.status for r in m.faults.of_kind("xorb")]
        refused = min(r.ended for r in m.faults.of_kind("xorb") if r.status == 403)
        recons = m.faults.of_kind("reconstruction")
    assert_pulled(home, xet_repo)
    assert 403 in xorbs and xorbs.count(206) >= 2, xorbs
    # Fresh URLs for what the refused range had left: a reconstruction of a range, asked after the 403.
    assert [r for r in recons if r.range and r.started >= refused], [(r.range, r.started - refused) for r in recons]
    assert sent(m, "resolve", MODEL) == 0


def test_a_token_that_expires_mid_pull_is_asked_again(xet_repo: GeneratedRepo, tmp_path: Path) -> None:
    """Tokens live 2 s; a reconstruction held 2.5 s meets an expired token (401): a new one."""
    with start_xet_mirror(FolderBackend(xet_repo.root), tmp_path / "xet", token_ttl=2) as m:
        m.faults.latency(2.5, times=1, predicate=kind("reconstruction"))
        bridge_refuses(m)
        home = _home(tmp_path)
        pull(home, m)
        recons = [r.status for r in m.faults.of_kind("reconstruction")]
        tokens = m.faults.of_kind("xet-read-token")
    assert_pulled(home, xet_repo)
    assert 401 in recons and len(tokens) >= 2, (recons, len(tokens))
    assert sent(m, "resolve", MODEL) == 0 and sent(m, "xorb") > SIZE


def test_kill_9_half_way_then_resume_loses_at_most_half_a_second(
        xm: Mirror, xet_repo: GeneratedRepo, tmp_path: Path) -> None:
    """Xorb bodies at 4 MB/s per connection: killed once half the file is on
    disk, the second run fetches the rest; what was fetched twice is at most
    half a second of the first run's rate."""
    bridge_refuses(xm)
    clean = _home(tmp_path, "clean")
    pull(clean, xm)
    once = sent(xm, "xorb")  # what a pull without a kill fetches
    xm.faults.log.clear()
    home = _home(tmp_path)
    exp = xet_repo.files[MODEL]
    map_file = home / "qwenhome" / "partials" / f"{exp.etag}.part.json"
    xm.faults.bandwidth(4_000_000)
    proc = subprocess.Popen([sys.executable, "-m", "qwenhome", "pull", "Org/XetPull"],
                            env=clean_env(home, xm.url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    while _covered(map_file) < exp.size // 2:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < 120, "no progress"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    elapsed = time.monotonic() - t0
    proc.communicate()
    first = sent(xm, "xorb")
    rate = first / elapsed
    xm.faults.bandwidth(None)
    pull(home, xm)
    assert_pulled(home, xet_repo)
    twice = sent(xm, "xorb") - once
    assert 0 <= twice <= 0.5 * rate, (twice, rate)
    assert sent(xm, "resolve", MODEL) == 0


def _covered(map_file: Path) -> int:
    try:
        return sum(e - s for s, e in json.loads(map_file.read_text())["done"])
    except (OSError, ValueError):
        return 0


def _edit(data: bytes, seed: int, *, edits: int, size: int, insert: int = 0) -> bytes:
    out = bytearray(data)
    n = len(data)
    for k in range(edits):
        at = (2 * k + 1) * n // (2 * edits + 1)
        out[at:at + size] = random_bytes(size, seed + k)
    cut = 2 * n // 5
    return bytes(out[:cut]) + random_bytes(insert, seed + 99) + bytes(out[cut:])


def new_chunk_bytes(old: list[bytes], new: list[bytes]) -> int:
    """Bytes of the chunks of ``new`` that no file of ``old`` has (Xet chunking)."""
    have = {chunk_hash(c) for data in old for c in iter_chunks(io.BytesIO(data))}
    seen: set[bytes] = set()
    total = 0
    for data in new:
        for c in iter_chunks(io.BytesIO(data)):
            h = chunk_hash(c)
            if h not in have and h not in seen:
                seen.add(h)
                total += len(c)
    return total


def test_an_updated_revision_fetches_only_its_new_chunks_and_copies_the_rest(tmp_path: Path) -> None:
    """About 10% changed (in-place edits and a 1 MiB insertion): the second
    pull copies the unchanged chunks from the first revision's blobs and
    fetches the new ones, at most 1.2x the new chunk data; the home holds
    the blobs and recipes of under 1% of their size."""
    old = {"a.safetensors": random_bytes(20 * MiB, 5), "b.safetensors": random_bytes(20 * MiB, 6)}
    new = {"a.safetensors": _edit(old["a.safetensors"], 10, edits=2, size=MiB // 2, insert=MiB),
           "b.safetensors": _edit(old["b.safetensors"], 20, edits=4, size=MiB // 2)}
    hub = tmp_path / "hub"
    first = make_store_repo(hub, make_repo(tmp_path / "r0", "Org/Up", old), commit="1" * 40)
    os.utime(first, (1_000_000, 1_000_000))  # chunked first: the new revision dedups against it
    second = make_repo(tmp_path / "r1", "Org/Up", new)
    make_store_repo(hub, second, commit="2" * 40)
    home = _home(tmp_path)
    with start_xet_mirror(StoreBackend(hub), tmp_path / "xet", cas_port=0, xorb_port=0) as m:
        pull(home, m, "Org/Up@" + "1" * 40)
        m.faults.log.clear()
        bridge_refuses(m)
        _, result = pull(home, m, "Org/Up@" + "2" * 40)
        fetched = sent(m, "xorb")
        assert sent(m, "resolve") == 0
    assert_pulled(home, second, "2" * 40)
    fresh = new_chunk_bytes(list(old.values()), list(new.values()))
    assert 0 < fetched <= 1.2 * fresh, (fetched, fresh)
    assert result["transfer"]["local_bytes"] >= sum(map(len, new.values())) - 1.2 * fresh  # type: ignore[index]
    blobs = sum(p.stat().st_size for p in (home / "hub" / "models--Org--Up" / "blobs").iterdir())
    recipes = sum(p.stat().st_size for p in (home / "qwenhome" / "xet" / "pulled").iterdir())
    assert blobs == sum(map(len, old.values())) + sum(map(len, new.values())) and recipes < 0.01 * blobs


@pytest.mark.parametrize("away", ["xorb-port-stopped", "cas-port-refused", "xorb-host-unresolvable",
                                  "cas-host-unresolvable"])
def test_xet_hosts_that_refuse_connections_or_do_not_resolve_fall_back_to_the_bridge_at_once(
        away: str, xet_repo: GeneratedRepo, tmp_path: Path) -> None:
    """The original report's failure: a DNS failure for a Xet transfer host
    (``.invalid`` never resolves), or a host that refuses connections."""
    hosts = {"xorb-host-unresolvable": {"xorb_host": "xet-transfer.invalid"},
             "cas-host-unresolvable": {"cas_host": "xet-cas.invalid"}}.get(away, {})
    with start_xet_mirror(FolderBackend(xet_repo.root), tmp_path / "xet", cas_port=0, xorb_port=0, **hosts) as xm:
        if away.endswith(("stopped", "refused")):
            xm.server.stop_listener("xorb" if away == "xorb-port-stopped" else "cas")
        home = _home(tmp_path)
        t0 = time.monotonic()
        res, _ = pull(home, xm)
        took = time.monotonic() - t0
        assert_pulled(home, xet_repo)
        assert sent(xm, "resolve", MODEL) == xet_repo.files[MODEL].size  # every byte from the bridge
        assert sent(xm, "xorb") == 0
    assert took < 20, took  # no long retries first (the back-off alone would take a minute)
    assert "xet" in res.stdout


def test_when_the_bridge_refuses_xet_alone_serves_the_file(xm: Mirror, xet_repo: GeneratedRepo,
                                                           tmp_path: Path) -> None:
    """The Hub refuses plain downloads of very large files: resolve bodies are
    403 here (HEAD still answers), and drops and an expired token on the way."""
    for path in (MODEL, "extra.bin"):
        xm.faults.fail(403, times=None, path=path, method="GET")
    xm.faults.drop_after(2_000_000, times=2, predicate=kind("xorb"))
    home = _home(tmp_path)
    pull(home, xm)
    assert_pulled(home, xet_repo)
    assert all(r.status == 403 for r in xm.faults.of_kind("resolve") if r.method == "GET"
               and r.file_path == MODEL)


_HF_READ = r"""
import json, sys
import huggingface_hub as h
repo, names = sys.argv[1], json.loads(sys.argv[2])
print(json.dumps([h.hf_hub_download(repo, n) for n in names]))
"""


def test_stock_huggingface_hub_reads_the_snapshot_offline(xm: Mirror, xet_repo: GeneratedRepo,
                                                         tmp_path: Path) -> None:
    home = _home(tmp_path)
    pull(home, xm)
    xm.stop()  # nothing to ask any more
    env = clean_env(home, extra={"HF_HUB_CACHE": str(home / "hub"), "HF_HUB_OFFLINE": "1",
                                 "HF_HUB_DISABLE_XET": "1"})
    names = sorted(xet_repo.files)
    out = subprocess.run([sys.executable, "-c", _HF_READ, "Org/XetPull", json.dumps(names)], env=env,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    paths = json.loads(out.strip().splitlines()[-1])
    assert [sha256_file(Path(p)) for p in paths] == [xet_repo.files[n].sha256 for n in names]


_PLAIN_PULL = r"""
import sys
from qwenhome.cli import main
rc = main(["pull", sys.argv[1], "--json"])
heavy = sorted(m for m in ("numpy", "lz4", "qwenhome.xet.reconstruction", "qwenhome.transfer.xorbs") if m in sys.modules)
print(f"exit {rc}; loaded: {','.join(heavy) or 'none'}")
"""


def test_a_pull_through_xet_loads_numpy_only_for_what_needs_it(xm: Mirror, xet_repo: GeneratedRepo,
                                                               tmp_path: Path) -> None:
    """Reconstructions, xorb ranges of raw and LZ4 chunks: no numpy (its
    import costs a pull 0.1-0.4 s here); it is for chunking a blob."""
    bridge_refuses(xm)
    home = _home(tmp_path)
    out = subprocess.run([sys.executable, "-c", _PLAIN_PULL, "Org/XetPull"], env=clean_env(home, xm.url),
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.stdout.strip().splitlines()[-1] == "exit 0; loaded: lz4,qwenhome.transfer.xorbs,qwenhome.xet.reconstruction", \
        (out.stdout[-500:], out.stderr[-2000:])
    assert_pulled(home, xet_repo)
    assert sent(xm, "xorb") > SIZE


def test_a_pull_from_a_source_without_xet_asks_a_few_heads_at_once_and_loads_no_xet_code(
        xet_repo: GeneratedRepo, tmp_path: Path) -> None:
    """The plain path stays as it was: the HEADs of the largest files (at
    most four, at once: a Xet source's reconstructions then all follow one
    round trip after the listing) say the source does not speak Xet; numpy,
    lz4 and the engine's Xet side are never imported (they cost a plain pull
    some 0.1-0.3 s of start-up)."""
    with start_mirror(FolderBackend(xet_repo.root)) as m:
        home = _home(tmp_path)
        out = subprocess.run([sys.executable, "-c", _PLAIN_PULL, "Org/XetPull"], env=clean_env(home, m.url),
                             capture_output=True, text=True, timeout=120, check=False)
        heads = [r for r in m.faults.records() if r.method == "HEAD"]
    assert out.stdout.strip().splitlines()[-1] == "exit 0; loaded: none", (out.stdout[-500:], out.stderr[-2000:])
    lfs = {rel for rel, f in xet_repo.files.items() if f.lfs}
    assert len(lfs) == 2 and sorted(r.file_path for r in heads) == sorted(lfs), [(r.method, r.file_path) for r in heads]
    assert_pulled(home, xet_repo)


def _answer(offset: int, length: int) -> bytes:
    xorb = "ab" * 32
    return json.dumps({
        "offset_into_first_range": offset,
        "terms": [{"hash": xorb, "range": {"start": 0, "end": 2}, "unpacked_length": length}],
        "xorbs": {xorb: [{"url": "http://127.0.0.1:9/xorb", "ranges": [
            {"chunks": {"start": 0, "end": 2}, "bytes": {"start": 0, "end": length + 15}}]}]},
    }).encode()


@pytest.mark.parametrize(("offset", "length", "size", "ok"), [
    (0, 200_000, 200_000, True),  # the whole file
    (0, 200_000, 150_000, False),  # terms longer than the file: writes past its end
    (10, 200_000, 200_000, False),  # an offset before the file's first byte
])
def test_a_reconstruction_that_places_bytes_outside_the_file_is_refused(offset: int, length: int, size: int,
                                                                       ok: bool) -> None:
    """Decoded chunks land where the answer says: a server must not make the
    partial file longer than the file (its sha256 covers only the size), nor
    aim before it. Refused, the file goes to its other sources."""
    answer = parse_reconstruction(_answer(offset, length))
    if ok:
        [plan] = plan_items(answer, 0, size)
        assert plan.file_range() == (0, length)
    else:
        with pytest.raises(XetAnswerError, match="outside the file"):
            plan_items(answer, 0, size)


def test_the_hub_token_goes_to_the_hub_only_and_xorb_urls_get_no_token(xet_repo: GeneratedRepo,
                                                                        tmp_path: Path) -> None:
    """The source's token reaches the source's origin (resolve, the token
    route); the CAS, on another port, gets the Xet token (it refuses the Hub
    token: 401); the signed xorb URLs get no Authorization at all."""
    with start_xet_mirror(FolderBackend(xet_repo.root), tmp_path / "xet", token="hub-secret-1", cas_port=0,
                          xorb_port=0) as m:
        bridge_refuses(m)  # (every byte through xorbs: their requests are there to check)
        home = _home(tmp_path)
        with open(home / "qwenhome" / "config.toml", "a") as fh:
            fh.write(f'[[sources]]\nname = "team"\nurl = "{m.url}"\ntoken = "hub-secret-1"\n')
        res = run_cli(["pull", "Org/XetPull", "--json"], home=home, timeout=180)
        assert res.returncode == 0, res.stderr[-3000:]
        records = m.faults.records()
    assert_pulled(home, xet_repo)
    by_kind: dict[str, set[bool]] = {}
    for r in records:
        by_kind.setdefault(r.route_kind, set()).add(r.has_auth_header)
    assert by_kind["xet-read-token"] == {True} and by_kind["reconstruction"] == {True}
    assert by_kind.get("xorb") == {False}  # (None: the bytes did not come through Xet)
    assert all(r.status != 401 for r in records if r.route_kind == "reconstruction")
