"""Failover between sources: mid-file, to a Hub mirror or to ModelScope, and
away from a source that serves corrupt bytes. Everything over real servers."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from qwenhome.config import Settings, Source, load_settings
from qwenhome.errors import IntegrityError, RemoteError
from qwenhome.mirror import BodyInterrupted, BodySlice, FolderBackend, HashCache, RequestInfo
from qwenhome.progress import ProgressEvent
from qwenhome.pull import pull
from qwenhome.sources import HEALTH_TTL, NetState, ProbeResult, rank
from qwenhome.store import RepoRef, Store
from qwenhome.transfer import EngineConfig
from qwenhome.transfer.retry import Backoff
from tests.support import tuning
from tests.support.faults import Faults
from tests.support.mirror import Mirror, start_mirror
from tests.support.modelscope_server import ModelScopeServer
from tests.support.repos import GeneratedRepo, MiB, make_repo

RANGE = 2 * MiB
# Fixed 2 MiB ranges so "file size plus one range" is a tight bound.
CFG = tuning.ranges(EngineConfig(connections=4, stall_timeout=1.0, backoff=Backoff(base=0.05, cap=0.3),
                                 max_retries=6), RANGE)
BIG = "model.safetensors"


@pytest.fixture(scope="module")
def fail_repo(repos_root: Path) -> GeneratedRepo:
    return make_repo(repos_root, "Org/Fail", {BIG: 24 * MiB + 5, "config.json": b'{"a": 1}\n',
                                              "tokenizer.json": 200_000}, seed=11)


class DiesAfter(Faults):
    """A source that goes down for good once it has sent ``budget`` bytes of ``path``:
    the body in flight is cut, then the server stops (connections refused)."""

    def __init__(self, path: str, budget: int) -> None:
        super().__init__()
        self.path, self.budget, self.sent = path, budget, 0
        self.dead = threading.Event()
        self.mirror: Mirror | None = None
        self._mu = threading.Lock()

    def body_writer(self, info: RequestInfo, body: BodySlice):  # type: ignore[no-untyped-def]
        if info.file_path != self.path:
            return super().body_writer(info, body)

        def write(sock, b: BodySlice) -> int:  # type: ignore[no-untyped-def]
            sent = 0
            while sent < b.length:
                with self._mu:
                    n = min(64 * 1024, b.length - sent, self.budget - self.sent)
                    self.sent += max(0, n)
                if n <= 0:
                    if not self.dead.is_set():
                        self.dead.set()
                        assert self.mirror is not None
                        threading.Thread(target=self.mirror.stop, daemon=True).start()
                    raise BodyInterrupted(sent, "source died")
                sock.sendall(os.pread(b.file.fileno(), n, b.offset + sent))
                sent += n
            return sent

        return write


def settings_with(home: Path, *specs: str) -> Settings:
    return load_settings({"HOME": str(home.parent)}, home=str(home), sources=list(specs))


def snapshot_ok(home: Path, repo: GeneratedRepo) -> Path:
    store = Store(home / "hub", home / "qwenhome")
    snap = store.snapshot_path(RepoRef(repo.repo_id))
    for rel in repo.files:
        assert (snap / rel).read_bytes() == (repo.path / rel).read_bytes(), rel
    return snap


@pytest.fixture
def second_mirror(repos_root: Path, hash_cache: HashCache) -> Iterator[Mirror]:
    with start_mirror(FolderBackend(repos_root, hashes=hash_cache)) as m:
        yield m


@pytest.fixture
def modelscope(repos_root: Path, hash_cache: HashCache) -> Iterator[ModelScopeServer]:
    with ModelScopeServer(repos_root, hashes=hash_cache) as ms:
        yield ms


def dying_mirror(repos_root: Path, hash_cache: HashCache, size: int) -> tuple[Mirror, DiesAfter]:
    faults = DiesAfter(BIG, int(size * 0.4))
    m = start_mirror(FolderBackend(repos_root, hashes=hash_cache), faults=faults)
    faults.mirror = m
    return m, faults


def test_failover_mid_file_to_second_mirror_keeps_ranges_on_disk(
        qwen_home: Path, repos_root: Path, hash_cache: HashCache, fail_repo: GeneratedRepo,
        second_mirror: Mirror) -> None:
    size = fail_repo.files[BIG].size
    first, faults = dying_mirror(repos_root, hash_cache, size)
    events: list[ProgressEvent] = []
    try:
        result = pull(settings_with(qwen_home, first.url, second_mirror.url), RepoRef.parse("Org/Fail"),
                      config=CFG, on_event=events.append)
    finally:
        first.stop()
    snapshot_ok(qwen_home, fail_repo)
    assert faults.dead.is_set(), "the first source must have died mid-file"
    from_second = second_mirror.faults.bytes_sent(BIG)
    assert faults.sent == int(size * 0.4)
    # The second source sends only what is missing: no restart from zero.
    print(f"failover: size={size} first={faults.sent} second={from_second} downloaded={result.downloaded_bytes}")
    assert faults.sent + from_second <= size + RANGE, (faults.sent, from_second)
    assert result.downloaded_bytes <= size + RANGE + 300_000
    assert any(e.event == "source" and f"switching to {second_mirror.url}" in e.message for e in events)


def test_failover_mid_file_to_modelscope_lists_it_only_when_needed(
        qwen_home: Path, repos_root: Path, hash_cache: HashCache, fail_repo: GeneratedRepo,
        modelscope: ModelScopeServer) -> None:
    size = fail_repo.files[BIG].size
    first, faults = dying_mirror(repos_root, hash_cache, size)
    try:
        pull(settings_with(qwen_home, first.url, f"modelscope:{modelscope.url}"), RepoRef.parse("Org/Fail"),
             config=CFG)
    finally:
        first.stop()
    snap = snapshot_ok(qwen_home, fail_repo)
    assert len(modelscope.records("files")) == 1, "ModelScope is listed once, after the first source failed"
    from_ms = modelscope.bytes_sent(BIG)
    assert from_ms > 0
    assert faults.sent + from_ms <= size + RANGE, (faults.sent, from_ms)
    # Matched by content, named as the Hub names it: the snapshot keeps the Hub commit.
    assert snap.name == (qwen_home / "hub/models--Org--Fail/refs/main").read_text()
    assert os.path.basename(os.readlink(snap / BIG)) == fail_repo.files[BIG].sha256


@pytest.mark.parametrize("fault", ["http-503-always", "stall-always", "stall-after-64k-always",
                                   "drop-always", "drop-after-64k-always"])
def test_persistently_failing_source_fails_over_per_file(
        fault: str, qwen_home: Path, mirror: Mirror, second_mirror: Mirror, fail_repo: GeneratedRepo) -> None:
    size = fail_repo.files[BIG].size
    # A source that sends a little of every body and then stalls or cuts it
    # moves some bytes on each attempt: only a whole range (or more than
    # ``progress_min``) counts as the source working.
    {"http-503-always": lambda: mirror.faults.fail(503, times=None, path=BIG),
     "stall-always": lambda: mirror.faults.stall(0, 30.0, times=None, path=BIG),
     "stall-after-64k-always": lambda: mirror.faults.stall(64 * 1024, 30.0, times=None, path=BIG),
     "drop-always": lambda: mirror.faults.drop_after(0, times=None, path=BIG, reset=True),
     "drop-after-64k-always": lambda: mirror.faults.drop_after(64 * 1024, times=None, path=BIG)}[fault]()
    pull(settings_with(qwen_home, mirror.url, second_mirror.url), RepoRef.parse("Org/Fail"), config=CFG)
    snapshot_ok(qwen_home, fail_repo)
    first, second = mirror.faults.bytes_sent(BIG), second_mirror.faults.bytes_sent(BIG)
    assert second > 0
    assert second <= size - first + RANGE, (first, second)  # what the first sent and we kept is not refetched
    assert mirror.faults.bytes_sent("tokenizer.json") > 0, "healthy files still come from the first source"


@pytest.mark.parametrize("path", ["event-loop", "threads"])
def test_ranges_still_out_at_the_left_source_do_not_count_against_the_next(
        path: str, qwen_home: Path, mirror: Mirror, second_mirror: Mirror, fail_repo: GeneratedRepo) -> None:
    """Many connections are out at the failing source when the file moves on:
    their failures arrive after the switch and must not be counted against
    the new source (they used up its retries and failed the file)."""
    mirror.faults.drop_after(64 * 1024, times=None, path=BIG)
    config = replace(CFG, connections=12, max_retries=2, loop_threads=2 if path == "event-loop" else 0)
    pull(settings_with(qwen_home, mirror.url, second_mirror.url), RepoRef.parse("Org/Fail"), config=config)
    snapshot_ok(qwen_home, fail_repo)
    assert second_mirror.faults.bytes_sent(BIG) > 0


def test_modelscope_is_not_contacted_when_the_hub_source_works(
        qwen_home: Path, mirror: Mirror, modelscope: ModelScopeServer, fail_repo: GeneratedRepo) -> None:
    pull(settings_with(qwen_home, mirror.url, f"modelscope:{modelscope.url}"), RepoRef.parse("Org/Fail"), config=CFG)
    snapshot_ok(qwen_home, fail_repo)
    assert modelscope.records() == []


def test_corrupt_source_is_dropped_and_file_refetched_from_another(
        qwen_home: Path, mirror: Mirror, second_mirror: Mirror, fail_repo: GeneratedRepo) -> None:
    size = fail_repo.files[BIG].size
    mirror.faults.corrupt(size // 2, times=None, path=BIG)
    result = pull(settings_with(qwen_home, mirror.url, second_mirror.url), RepoRef.parse("Org/Fail"), config=CFG)
    snapshot_ok(qwen_home, fail_repo)
    assert mirror.faults.hits("corrupt") >= 1, "the corrupt byte was served"
    assert second_mirror.faults.bytes_sent(BIG) >= size // 2
    assert result.downloaded_bytes < 2 * size + RANGE
    # Health remembers the failure, so the next pull ranks the corrupt source last.
    settings = settings_with(qwen_home, mirror.url, second_mirror.url)
    state = NetState.load(settings)
    assert state.failures(settings.sources[0]) == 1
    assert rank(settings.sources, (), state)[0].url == second_mirror.url


def test_corrupt_modelscope_bytes_fail_the_file_when_no_hub_source_can_serve_its_snapshot(
        qwen_home: Path, mirror: Mirror, modelscope: ModelScopeServer, fail_repo: GeneratedRepo) -> None:
    modelscope.corrupt(BIG, 1000)
    # ModelScope first: it gives the metadata (sha256-named blobs, a listing
    # commit no Hub source knows), so the Hub source is no candidate for its
    # files; the corrupt bytes fail the file with the integrity error.
    with pytest.raises(IntegrityError) as info:
        pull(settings_with(qwen_home, f"modelscope:{modelscope.url}", mirror.url), RepoRef.parse("Org/Fail"),
             config=CFG)
    assert (info.value.code, info.value.exit_code) == ("hash-mismatch", 6)
    assert f"{BIG}: sha256 mismatch" in info.value.message
    assert not list((qwen_home / "hub/models--Org--Fail/snapshots").glob(f"*/{BIG}"))
    assert mirror.faults.bytes_sent(BIG) == 0


def test_rank_prefers_reachable_healthy_quick_sources_then_configured_order() -> None:
    a, b, c, d = (Source(n, "hf", f"http://{n}.test") for n in "abcd")
    results = [ProbeResult(a, False, "connection-refused"), ProbeResult(b, True, "ok", 400.0),
               ProbeResult(c, True, "ok", 20.0), ProbeResult(d, True, "ok", 30.0)]
    assert [s.name for s in rank([a, b, c, d], results)] == ["c", "d", "b", "a"]


def test_health_failures_reset_on_success_and_fade_with_time(qwen_home: Path) -> None:
    settings = settings_with(qwen_home, "http://a.test", "http://b.test")
    a = settings.sources[0]
    state = NetState.load(settings)
    state.record(a, False, now=1000.0)
    state.record(a, False, now=1001.0)
    assert state.failures(a, now=1002.0) == 2
    assert state.failures(a, now=1001.0 + HEALTH_TTL + 1) == 0, "an old failure no longer ranks it last"
    state.record(a, True, now=1003.0)
    assert state.failures(a, now=1004.0) == 0


def test_a_file_whose_every_source_is_dropped_or_differs_fails_with_no_source(
        qwen_home: Path, tmp_path: Path, mirror: Mirror, small_repo: GeneratedRepo, hash_cache: HashCache) -> None:
    """The Hub source sends the weights corrupt and fails the tokenizer; the
    ModelScope source has the same weights but another tokenizer. The weights
    come from ModelScope and the Hub source is dropped for serving bad bytes;
    then the tokenizer has no source left that could serve its content."""
    ms_root = tmp_path / "ms"
    shutil.copytree(small_repo.path, ms_root / "Org" / "Small")
    (ms_root / "Org" / "Small" / "tokenizer.json").write_bytes(b'{"another": "tokenizer"}\n')
    mirror.faults.corrupt(1000, times=None, path=BIG)
    mirror.faults.fail(500, times=None, path="tokenizer.json")
    with ModelScopeServer(ms_root, hashes=hash_cache) as ms, pytest.raises(RemoteError) as info:
        pull(settings_with(qwen_home, mirror.url, f"modelscope:{ms.url}"), RepoRef.parse("Org/Small"), config=CFG)
    assert (info.value.code, info.value.exit_code) == ("no-source", 5)
    assert info.value.message == "1 file(s) of Org/Small failed: tokenizer.json: no usable source left"
    assert ms.bytes_sent(BIG) == small_repo.files[BIG].size and ms.bytes_sent("tokenizer.json") == 0
    store = Store(qwen_home / "hub", qwen_home / "qwenhome")
    assert store.has_blob(RepoRef.parse("Org/Small"), small_repo.files[BIG].etag), "the weights are kept"
