"""The mirror speaks the Hub protocol: headers, ranges, keep-alive, errors, listings, token."""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from qwenhome.mirror import FolderBackend, HashCache, StoreBackend
from tests.support.http import Connection, request
from tests.support.mirror import Mirror, start_mirror
from tests.support.repos import GeneratedRepo, content, make_store_repo

SMALL = "/Org/Small/resolve/main"


def commit_of(mirror: Mirror, repo: str = "Org/Small", api: str = "models") -> str:
    info = json.loads(request(mirror.url, path=f"/api/{api}/{repo}/revision/main").body)
    return str(info["sha"])


def test_head_on_lfs_file_carries_hub_headers(mirror: Mirror, small_repo: GeneratedRepo) -> None:
    f = small_repo.files["model.safetensors"]
    r = request(mirror.url, "HEAD", f"{SMALL}/model.safetensors")
    assert r.status == 200
    assert r.body == b""
    assert r.header("X-Repo-Commit") == commit_of(mirror)
    assert r.header("ETag") == f'"{f.sha256}"'
    assert r.header("X-Linked-Etag") == f'"{f.sha256}"'
    assert r.header("X-Linked-Size") == str(f.size)
    assert r.header("Content-Length") == str(f.size)
    assert r.header("Accept-Ranges") == "bytes"
    assert r.header("Content-Type") == "application/octet-stream"


def test_head_on_small_file_uses_git_blob_oid_as_etag(mirror: Mirror, small_repo: GeneratedRepo) -> None:
    f = small_repo.files["config.json"]
    r = request(mirror.url, "HEAD", f"{SMALL}/config.json")
    assert r.status == 200
    assert r.header("ETag") == f'"{f.git_oid}"'
    assert r.header("X-Linked-Etag") is None
    assert r.header("Content-Length") == str(f.size)
    assert r.header("Content-Type", ).startswith("text/plain")  # type: ignore[union-attr]


def test_get_returns_exact_bytes_of_nested_and_empty_files(mirror: Mirror, small_repo: GeneratedRepo) -> None:
    for rel in ("sub/dir/notes.txt", "empty.txt", "model.safetensors"):
        r = request(mirror.url, "GET", f"{SMALL}/{rel}")
        assert r.status == 200, rel
        assert hashlib.sha256(r.body).hexdigest() == small_repo.files[rel].sha256


@pytest.mark.parametrize(
    ("spec", "start", "end"),
    [("bytes=10-19", 10, 19), ("bytes=5000000-", 5000000, None), ("bytes=-7", -7, None),
     ("bytes=0-0", 0, 0), ("bytes=5242000-99999999", 5242000, None)],
)
def test_single_range_answers_206_with_content_range(
    mirror: Mirror, small_repo: GeneratedRepo, spec: str, start: int, end: int | None,
) -> None:
    data = (small_repo.path / "model.safetensors").read_bytes()
    size = len(data)
    first = start if start >= 0 else size + start
    last = end if end is not None else size - 1
    r = request(mirror.url, "GET", f"{SMALL}/model.safetensors", {"Range": spec})
    assert r.status == 206
    assert r.header("Content-Range") == f"bytes {first}-{last}/{size}"
    assert r.header("Content-Length") == str(last - first + 1)
    assert r.body == data[first : last + 1]


def test_range_past_the_end_answers_416(mirror: Mirror, small_repo: GeneratedRepo) -> None:
    size = small_repo.files["model.safetensors"].size
    r = request(mirror.url, "GET", f"{SMALL}/model.safetensors", {"Range": f"bytes={size}-"})
    assert r.status == 416
    assert r.header("Content-Range") == f"bytes */{size}"
    assert request(mirror.url, "GET", f"{SMALL}/empty.txt", {"Range": "bytes=0-"}).status == 416


@pytest.mark.parametrize("spec", ["bytes=0-1,5-6", "items=0-1", "bytes=9-3", "bytes=x-"])
def test_unsupported_or_malformed_range_sends_whole_file(mirror: Mirror, small_repo: GeneratedRepo, spec: str) -> None:
    r = request(mirror.url, "GET", f"{SMALL}/config.json", {"Range": spec})
    assert r.status == 200
    assert r.body == (small_repo.path / "config.json").read_bytes()


def test_if_range_honoured_only_when_etag_matches(mirror: Mirror, small_repo: GeneratedRepo) -> None:
    f = small_repo.files["model.safetensors"]
    path = f"{SMALL}/model.safetensors"
    good = request(mirror.url, "GET", path, {"Range": "bytes=0-9", "If-Range": f'"{f.sha256}"'})
    assert good.status == 206 and len(good.body) == 10
    stale = request(mirror.url, "GET", path, {"Range": "bytes=0-9", "If-Range": '"0000"'})
    assert stale.status == 200 and len(stale.body) == f.size


def test_keep_alive_serves_many_requests_on_one_connection(mirror: Mirror, small_repo: GeneratedRepo) -> None:
    data = (small_repo.path / "model.safetensors").read_bytes()
    with Connection(mirror.url) as conn:
        ports = set()
        for i in range(20):
            start = i * 100_000
            r = conn.request("GET", f"{SMALL}/model.safetensors", {"Range": f"bytes={start}-{start + 99_999}"})
            assert r.status == 206 and r.body == data[start : start + 100_000]
            ports.add(conn.local_port)
        conn.request("HEAD", f"{SMALL}/config.json")
        conn.request("GET", "/api/models/Org/Nope/revision/main")  # errors keep the connection too
        conn.request("GET", f"{SMALL}/config.json")
    assert len(ports) == 1
    records = mirror.faults.records()
    assert {r.connection_id for r in records} == {records[0].connection_id}
    assert [r.request_no for r in records] == list(range(1, 24))


def test_missing_repo_revision_and_entry_use_hub_error_codes(mirror: Mirror) -> None:
    repo = request(mirror.url, "GET", "/Org/Nope/resolve/main/config.json")
    assert (repo.status, repo.header("X-Error-Code")) == (404, "RepoNotFound")
    assert "error" in json.loads(repo.body)
    rev = request(mirror.url, "HEAD", "/Org/Small/resolve/v9/config.json")
    assert (rev.status, rev.header("X-Error-Code")) == (404, "RevisionNotFound")
    entry = request(mirror.url, "GET", f"{SMALL}/nope.bin")
    assert (entry.status, entry.header("X-Error-Code")) == (404, "EntryNotFound")
    assert entry.header("X-Repo-Commit") == commit_of(mirror)
    info = request(mirror.url, "GET", "/api/models/Org/Small/revision/" + "f" * 40)
    assert (info.status, info.header("X-Error-Code")) == (404, "RevisionNotFound")
    assert request(mirror.url, "GET", "/unknown/route").status == 400


def test_revision_info_with_blobs_lists_sizes_oids_and_lfs(mirror: Mirror, small_repo: GeneratedRepo) -> None:
    info = json.loads(request(mirror.url, path="/api/models/Org/Small/revision/main?blobs=true").body)
    assert info["id"] == "Org/Small" and len(info["sha"]) == 40
    siblings = {s["rfilename"]: s for s in info["siblings"]}
    assert set(siblings) == set(small_repo.files)
    for rel, f in small_repo.files.items():
        s = siblings[rel]
        assert s["size"] == f.size and s["blobId"] == f.blob_id
        assert (s.get("lfs") or {}).get("sha256") == (f.sha256 if f.lfs else None)
    plain = json.loads(request(mirror.url, path="/api/models/Org/Small").body)
    assert plain["sha"] == info["sha"] and "size" not in plain["siblings"][0]
    by_commit = json.loads(request(mirror.url, path=f"/api/models/Org/Small/revision/{info['sha']}").body)
    assert by_commit["sha"] == info["sha"]


def test_tree_lists_recursively_and_paginates_with_link_header(repos_root: Path, small_repo: GeneratedRepo,
                                                               hash_cache: HashCache) -> None:
    with start_mirror(FolderBackend(repos_root, hashes=hash_cache), tree_page_size=2) as m:
        url: str | None = f"{m.url}/api/models/Org/Small/tree/main?recursive=true&expand=false"
        entries, pages = [], 0
        while url:
            parts = urlsplit(url)
            r = request(m.url, path=f"{parts.path}?{parts.query}")
            assert r.status == 200
            entries += json.loads(r.body)
            pages += 1
            link = r.header("Link")
            url = link.split(";")[0].strip("<>") if link else None
        files = {e["path"]: e for e in entries if e["type"] == "file"}
        assert set(files) == set(small_repo.files)
        assert {e["path"] for e in entries if e["type"] == "directory"} == {"sub", "sub/dir"}
        assert pages == 4  # 8 entries, 2 per page
        lfs = files["model.safetensors"]
        assert lfs["lfs"]["oid"] == small_repo.files["model.safetensors"].sha256
        assert files["config.json"]["oid"] == small_repo.files["config.json"].git_oid
        top = json.loads(request(m.url, path="/api/models/Org/Small/tree/main/sub%2Fdir").body)
        assert [e["path"] for e in top] == ["sub/dir/notes.txt"]
        assert request(m.url, path="/api/models/Org/Small/tree/main/nope").header("X-Error-Code") == "EntryNotFound"


def test_dataset_routes_serve_dataset_folders(mirror: Mirror, small_dataset: GeneratedRepo) -> None:
    info = json.loads(request(mirror.url, path="/api/datasets/Org/Data/revision/main?blobs=true").body)
    assert {s["rfilename"] for s in info["siblings"]} == set(small_dataset.files)
    r = request(mirror.url, path="/datasets/Org/Data/resolve/main/data/train.jsonl")
    assert hashlib.sha256(r.body).hexdigest() == small_dataset.files["data/train.jsonl"].sha256
    assert request(mirror.url, path="/Org/Data/resolve/main/README.md").status == 404


def test_token_required_when_set(repos_root: Path, small_repo: GeneratedRepo, hash_cache: HashCache) -> None:
    with start_mirror(FolderBackend(repos_root, hashes=hash_cache), token="s3cret") as m:
        path = f"{SMALL}/config.json"
        assert request(m.url, path=path).status == 401
        assert request(m.url, path=path, headers={"Authorization": "Bearer wrong"}).status == 401
        assert request(m.url, path="/api/models/Org/Small").status == 401
        ok = request(m.url, path=path, headers={"Authorization": "Bearer s3cret"})
        assert ok.status == 200 and ok.body == (small_repo.path / "config.json").read_bytes()
        denied = request(m.url, path="/%2e%2e/x")  # no hint about paths before auth
        assert denied.status == 401 and b"credentials" in denied.body


def test_token_never_required_when_unset(mirror: Mirror) -> None:
    for headers in ({}, {"Authorization": "Bearer anything"}, {"Authorization": "garbage"}):
        assert request(mirror.url, path=f"{SMALL}/config.json", headers=headers).status == 200


def test_redirect_mode_sends_lfs_files_to_signed_cdn_url(repos_root: Path, small_repo: GeneratedRepo,
                                                         hash_cache: HashCache) -> None:
    f = small_repo.files["model.safetensors"]
    with start_mirror(FolderBackend(repos_root, hashes=hash_cache), token="tok", redirect_lfs=True) as m:
        auth = {"Authorization": "Bearer tok"}
        head = request(m.url, "HEAD", f"{SMALL}/model.safetensors", auth)
        assert head.status == 302
        assert head.header("X-Linked-Etag") == f'"{f.sha256}"' and head.header("X-Linked-Size") == str(f.size)
        location = head.header("Location") or ""
        loc = urlsplit(location)
        assert loc.hostname == "localhost" and loc.port == m.server.port
        cdn = request(m.url, "GET", loc.path)  # no token needed: the URL is signed
        assert hashlib.sha256(cdn.body).hexdigest() == f.sha256
        forged = loc.path.replace(loc.path.split("/")[2], "0" * 32)
        assert request(m.url, "GET", forged).status == 403
        small = request(m.url, "HEAD", f"{SMALL}/config.json", auth)
        assert small.status == 200  # small files are served directly, as on the Hub


def test_store_backend_serves_refs_commits_and_blob_hashes(store_mirror: Mirror, small_repo: GeneratedRepo) -> None:
    info = json.loads(request(store_mirror.url, path="/api/models/Org/Small/revision/main?blobs=true").body)
    assert info["sha"] == "a" * 40
    sizes = {s["rfilename"]: s["size"] for s in info["siblings"]}
    assert sizes == {k: f.size for k, f in small_repo.files.items()}
    for rev in ("main", "a" * 40):
        r = request(store_mirror.url, "HEAD", f"/Org/Small/resolve/{rev}/model.safetensors")
        assert r.header("ETag") == f'"{small_repo.files["model.safetensors"].sha256}"'
        assert r.header("X-Repo-Commit") == "a" * 40
    r = request(store_mirror.url, path="/datasets/Org/Data/resolve/main/README.md")
    assert r.status == 200 and r.body == b"# data\n"
    assert request(store_mirror.url, path="/Org/Small/resolve/" + "b" * 40 + "/config.json").status == 404


def test_folder_backend_hashes_each_file_once_and_persists(tmp_path: Path) -> None:
    root = tmp_path / "repos"
    (root / "Org" / "A").mkdir(parents=True)
    (root / "Org" / "A" / "w.bin").write_bytes(content(3_000_000, 5))
    cache_file = tmp_path / "hashes.json"
    first = HashCache(cache_file)
    with start_mirror(FolderBackend(root, hashes=first, ttl=0.0)) as m:
        for _ in range(5):
            assert request(m.url, "HEAD", "/Org/A/resolve/main/w.bin").status == 200
    assert first.computed == 1
    second = HashCache(cache_file)
    with start_mirror(FolderBackend(root, hashes=second, ttl=0.0)) as m:
        assert request(m.url, "HEAD", "/Org/A/resolve/main/w.bin").status == 200
    assert second.computed == 0


def test_folder_backend_sees_changed_files_and_new_commit(tmp_path: Path) -> None:
    root = tmp_path / "repos"
    (root / "Org" / "A").mkdir(parents=True)
    (root / "Org" / "A" / "a.txt").write_bytes(b"one")
    with start_mirror(FolderBackend(root, ttl=0.0)) as m:
        before = commit_of(m, "Org/A")
        (root / "Org" / "A" / "a.txt").write_bytes(b"second")
        after = commit_of(m, "Org/A")
        assert before != after
        assert request(m.url, path="/Org/A/resolve/main/a.txt").body == b"second"


def test_store_backend_ignores_unfinished_downloads(tmp_path: Path) -> None:
    hub = tmp_path / "hub"
    snap = hub / "models--Org--P" / "snapshots" / ("1" * 40)
    snap.mkdir(parents=True)
    (hub / "models--Org--P" / "refs").mkdir()
    (hub / "models--Org--P" / "refs" / "main").write_text("1" * 40)
    (snap / "dangling.bin").symlink_to("../../blobs/" + "e" * 64)
    with start_mirror(StoreBackend(hub)) as m:
        info = json.loads(request(m.url, path="/api/models/Org/P/revision/main").body)
        assert info["siblings"] == []
        assert request(m.url, path="/Org/P/resolve/main/dangling.bin").header("X-Error-Code") == "EntryNotFound"


def test_large_file_in_parallel_ranges_over_keep_alive_connections(
    repos_root: Path, big_repo: GeneratedRepo, hash_cache: HashCache,
) -> None:
    """A 200 MB file fetched as 8 MiB ranges over 8 reused connections, like a downloader."""
    from concurrent.futures import ThreadPoolExecutor

    f = big_repo.files["model.safetensors"]
    part = 8 * 1024 * 1024
    ranges = [(s, min(s + part, f.size) - 1) for s in range(0, f.size, part)]
    out = bytearray(f.size)
    with start_mirror(FolderBackend(repos_root, hashes=hash_cache)) as m:
        local = threading.local()

        def fetch(rng: tuple[int, int]) -> None:
            conn = getattr(local, "conn", None) or Connection(m.url, timeout=30)
            local.conn = conn
            r = conn.request("GET", "/Org/Big/resolve/main/model.safetensors", {"Range": f"bytes={rng[0]}-{rng[1]}"})
            assert r.status == 206 and len(r.body) == rng[1] - rng[0] + 1
            out[rng[0] : rng[1] + 1] = r.body

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(fetch, ranges))
        log = m.faults.records()
    assert hashlib.sha256(out).hexdigest() == f.sha256
    assert len(log) == len(ranges) and len({r.connection_id for r in log}) <= 8
    assert sum(r.bytes_sent for r in log) == f.size


def test_warm_hashes_every_repository_before_the_first_request(tmp_path: Path) -> None:
    from qwenhome.mirror import warm

    root = tmp_path / "repos"
    for repo in ("Org/A", "Org/B", "datasets/Org/C"):
        (root / repo).mkdir(parents=True)
        (root / repo / "w.bin").write_bytes(content(2_000_000, 1, repo))
        (root / repo / "c.json").write_bytes(b"{}")
    (root / "Org" / ".hidden").mkdir()
    hashes = HashCache()
    backend = FolderBackend(root, hashes=hashes)
    assert backend.repos() == [("dataset", "Org/C"), ("model", "Org/A"), ("model", "Org/B")]
    assert warm(backend) == 3 and hashes.computed == 6
    with start_mirror(backend) as m:
        assert request(m.url, "HEAD", "/datasets/Org/C/resolve/main/w.bin").status == 200
    assert hashes.computed == 6


def test_binds_ipv6_loopback_when_asked(repos_root: Path, small_repo: GeneratedRepo, hash_cache: HashCache) -> None:
    import socket

    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    from qwenhome.mirror import MirrorServer

    with MirrorServer(FolderBackend(repos_root, hashes=hash_cache), host="::1") as server:
        assert server.url.startswith("http://[::1]:")
        conn = http.client.HTTPConnection("::1", server.port, timeout=5)
        conn.request("GET", "/Org/Small/resolve/main/config.json")
        assert conn.getresponse().read() == (small_repo.path / "config.json").read_bytes()
        conn.close()


def test_file_changed_since_listing_answers_503_retry_after(tmp_path: Path) -> None:
    root = tmp_path / "repos"
    (root / "Org" / "A").mkdir(parents=True)
    (root / "Org" / "A" / "a.txt").write_bytes(b"one")
    with start_mirror(FolderBackend(root, ttl=60.0)) as m:
        assert request(m.url, "HEAD", "/Org/A/resolve/main/a.txt").status == 200
        (root / "Org" / "A" / "a.txt").write_bytes(b"longer now")
        r = request(m.url, path="/Org/A/resolve/main/a.txt")
        assert r.status == 503 and r.header("Retry-After") == "1"


def test_store_with_shared_xet_blobs_serves_sha256_etags(tmp_path: Path) -> None:
    """huggingface_hub's cache-wide blobs: repo ``blobs/<sha256>`` links to ``<cache>/blobs/ab/<xet hash>``."""
    data = content(1_500_000, 9)
    sha = hashlib.sha256(data).hexdigest()
    xet = "ab" + "7" * 62
    hub = tmp_path / "hub"
    (hub / "blobs" / "ab").mkdir(parents=True)
    (hub / "blobs" / "ab" / xet).write_bytes(data)
    repo = hub / "models--Org--X"
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / sha).symlink_to(f"../../blobs/ab/{xet}")
    snap = repo / "snapshots" / ("9" * 40)
    (snap / "w").mkdir(parents=True)
    (snap / "w" / "model.safetensors").symlink_to(f"../../../blobs/{sha}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("9" * 40)
    with start_mirror(StoreBackend(hub)) as m:
        head = request(m.url, "HEAD", "/Org/X/resolve/main/w/model.safetensors")
        assert head.header("ETag") == f'"{sha}"' and head.header("X-Linked-Size") == str(len(data))
        assert request(m.url, path="/Org/X/resolve/main/w/model.safetensors").body == data


def test_stale_listing_is_rescanned_once_while_others_keep_serving(tmp_path: Path) -> None:
    from qwenhome.mirror.catalog import Snapshot

    (tmp_path / "Org" / "A").mkdir(parents=True)
    (tmp_path / "Org" / "A" / "a.txt").write_bytes(b"a")
    now = [0.0]

    class CountingBackend(FolderBackend):
        scans = 0

        def _scan(self, repo_type: str, repo_id: str) -> Snapshot:
            CountingBackend.scans += 1
            time.sleep(0.2)
            return super()._scan(repo_type, repo_id)

    backend = CountingBackend(tmp_path, ttl=2.0, clock=lambda: now[0])
    first = backend.snapshot("model", "Org/A", "main")
    now[0] = 10.0  # stale
    results: list[Snapshot] = []
    threads = [threading.Thread(target=lambda: results.append(backend.snapshot("model", "Org/A", "main")))
               for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert CountingBackend.scans == 2  # the first load and one refresh, not 16
    assert len(results) == 16 and all(r.commit == first.commit for r in results)


def test_unfinished_pull_is_listed_whole_and_missing_files_are_404(tmp_path: Path, small_repo: GeneratedRepo) -> None:
    from qwenhome.manifest import Manifest, RepoFile
    from qwenhome.store import Store

    hub, state = tmp_path / "hub", tmp_path / "state"
    make_store_repo(hub, small_repo, commit="1" * 40)
    files = [RepoFile(rel, f.size, f.blob_id, f.sha256 if f.lfs else None) for rel, f in small_repo.files.items()]
    files.append(RepoFile("model-2.safetensors", 7_000_000, None, "d" * 64))
    Store(hub, state).save_manifest(Manifest("Org/Small", "model", "1" * 40, files, "hf"))
    with start_mirror(StoreBackend(hub, state_dir=state)) as m:
        info = json.loads(request(m.url, path="/api/models/Org/Small/revision/main?blobs=true").body)
        listed = {s["rfilename"]: s for s in info["siblings"]}
        assert set(listed) == {*small_repo.files, "model-2.safetensors"}
        assert listed["model-2.safetensors"]["lfs"]["sha256"] == "d" * 64
        missing = request(m.url, "HEAD", "/Org/Small/resolve/main/model-2.safetensors")
        assert (missing.status, missing.header("X-Error-Code")) == (404, "EntryNotFound")
        assert request(m.url, "HEAD", "/Org/Small/resolve/main/config.json").status == 200
