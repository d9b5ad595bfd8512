"""Stock huggingface_hub + hf_xet download from the mirror through Xet, as from the Hub, verified.

hf_xet runs in subprocesses with throw-away HOME/HF_HOME (``hf_download``).
The mirror's request log shows what the client did: the token route, the
reconstructions, the xorb ranges, and no resolve body for an LFS file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from qwenhome.mirror import FolderBackend, StoreBackend, XetOptions
from qwenhome.xet.xorb import read_headers
from tests.support.http import request
from tests.support.mirror import pull_through_settings, start_mirror, start_pull_through
from tests.support.repos import GeneratedRepo, make_repo, make_store_repo, sha256_file
from tests.support.xet_mirror import (
    hf_download,
    random_bytes,
    reconstruction,
    start_xet_mirror,
    token_for,
)
from tests.support.xet_oracle import hf_xet_hashes

MiB = 1 << 20


@pytest.fixture(scope="module")
def xet_repo(tmp_path_factory: pytest.TempPathFactory) -> GeneratedRepo:
    root = tmp_path_factory.mktemp("xet-repos")
    return make_repo(root, "Org/Xet", {
        "model.safetensors": random_bytes(12 * MiB, 1),
        "sub/extra.bin": random_bytes(3 * MiB + 123, 2),
        "config.json": b'{"model_type": "qwen2"}\n',
    })


def assert_files(folder: Path, repo: GeneratedRepo) -> None:
    for rel, f in repo.files.items():
        assert sha256_file(folder / rel) == f.sha256, rel


@pytest.mark.parametrize("layout", ["folder", "store"])
def test_stock_hf_xet_downloads_through_the_mirrors_cas_and_verifies(
        xet_repo: GeneratedRepo, tmp_path: Path, layout: str) -> None:
    if layout == "folder":
        backend: FolderBackend | StoreBackend = FolderBackend(xet_repo.root)
    else:
        make_store_repo(tmp_path / "hub", xet_repo, commit="a" * 40)
        backend = StoreBackend(tmp_path / "hub")
    with start_xet_mirror(backend, tmp_path / "xet") as m:
        [folder] = hf_download(m.url, "Org/Xet", tmp_path)
        assert_files(folder, xet_repo)
        log = m.faults.records()
    lfs = {p for p, f in xet_repo.files.items() if f.lfs}
    # LFS files came through Xet: no resolve body for them, only for config.json.
    assert {r.file_path for r in log if r.route_kind == "resolve" and r.method == "GET"} == {"config.json"}
    assert [r.status for r in log if r.route_kind == "xet-read-token"] == [200]
    recons = [r for r in log if r.route_kind == "reconstruction"]
    xorbs = [r for r in log if r.route_kind == "xorb"]
    assert len(recons) == len(lfs) and all(r.status == 200 and r.path.startswith("/v2/") for r in recons)
    assert xorbs and all(r.status == 206 and r.range for r in xorbs)
    sizes = sum(xet_repo.files[p].size for p in lfs)
    # Every byte once, plus 8 bytes of header per chunk of about 64 KiB.
    assert sizes < sum(r.bytes_sent for r in xorbs) < sizes * 1.001 + 4096


def test_every_blobs_xet_hash_is_hf_xets(tmp_path: Path) -> None:
    zeros = random_bytes(1 * MiB, 3) + bytes(3 * MiB) + random_bytes(500_000, 4)
    sizes = {f"s{n}.bin": random_bytes(n, n) for n in (1, 8191, 8192, 8193, 65536, 131072, 131073, 1_000_000)}
    repo = make_repo(tmp_path / "repos", "Org/Edges", {**sizes, "zeros.safetensors": zeros})
    with start_xet_mirror(FolderBackend(repo.root), tmp_path / "xet") as m:
        names = sorted(repo.files)
        heads = {n: request(m.url, "HEAD", f"/Org/Edges/resolve/main/{n}").header("X-Xet-Hash") for n in names}
        tree = request(m.url, path="/api/models/Org/Edges/tree/main?recursive=true")
    expected = dict(zip(names, hf_xet_hashes([repo.path / n for n in names], tmp_path), strict=True))
    assert heads == expected
    assert {e["path"]: e["xetHash"] for e in json.loads(tree.body)} == expected


def test_v1_reconstructions_serve_a_client_when_v2_is_missing(xet_repo: GeneratedRepo, tmp_path: Path) -> None:
    with start_xet_mirror(FolderBackend(xet_repo.root), tmp_path / "xet") as m:
        m.faults.fail(404, times=None, predicate=lambda i: i.route_kind == "reconstruction"
                      and i.path.startswith("/v2/"))
        paths = hf_download(m.url, "Org/Xet", tmp_path, files=["model.safetensors"])
        assert sha256_file(paths[0]) == xet_repo.files["model.safetensors"].sha256
        recons = m.faults.of_kind("reconstruction")
    assert [(r.path[:4], r.status) for r in recons] == [("/v2/", 404), ("/v1/", 200)]


def _edit(data: bytes, seed: int, *, edits: int, size: int, insert: int = 0) -> bytes:
    """``edits`` in-place edits of ``size`` bytes each, spread out, and ``insert`` new bytes at 40%."""
    out = bytearray(data)
    n = len(data)
    for k in range(edits):
        at = (2 * k + 1) * n // (2 * edits + 1)
        out[at:at + size] = random_bytes(size, seed + k)
    cut = 2 * n // 5
    return bytes(out[:cut]) + random_bytes(insert, seed + 99) + bytes(out[cut:])


@pytest.mark.parametrize("restart", [False, True])
def test_an_updated_revision_points_at_the_old_revisions_xorbs_for_unchanged_chunks(
        tmp_path: Path, restart: bool) -> None:
    """About 10% of the new revision is new (in-place edits, and a 1 MiB insertion): the
    reconstruction's terms give the rest from the xorbs of the old revision, but for the
    chunks that straddle an edit. With ``restart``, the old revision was chunked by an
    earlier run of the mirror (its records are read back from disk)."""
    old = {"a.safetensors": random_bytes(20 * MiB, 5), "b.safetensors": random_bytes(20 * MiB, 6)}
    new = {"a.safetensors": _edit(old["a.safetensors"], 10, edits=2, size=MiB // 2, insert=MiB),
           "b.safetensors": _edit(old["b.safetensors"], 20, edits=4, size=MiB // 2)}
    new_bytes, sites = 4 * MiB, 7  # what no old xorb holds; the places where old and new meet
    hub = tmp_path / "hub"
    first = make_store_repo(hub, make_repo(tmp_path / "r0", "Org/Up", old), commit="1" * 40)
    os.utime(first, (1_000_000, 1_000_000))  # the older revision is chunked first
    if restart:
        start_xet_mirror(StoreBackend(hub), tmp_path / "xet").stop()
    make_store_repo(hub, make_repo(tmp_path / "r1", "Org/Up", new), commit="2" * 40)
    with start_xet_mirror(StoreBackend(hub), tmp_path / "xet") as m:
        assert m.server.xet is not None and m.server.xet.builder.built == (2 if restart else 4)

        def terms(commit: str, name: str) -> list[tuple[str, int]]:
            file_id = request(m.url, "HEAD", f"/Org/Up/resolve/{commit}/{name}").header("X-Xet-Hash")
            assert file_id
            resp = reconstruction(token_for(m.url, "Org/Up", commit), file_id)
            return [(t["hash"], t["unpacked_length"]) for t in json.loads(resp.body)["terms"]]

        reused = total = 0
        for name in sorted(old):
            before = {h for h, _ in terms("1" * 40, name)}
            assert len(before) == 2  # 20 MiB in xorbs of 16 MiB: parallel requests for a stock client
            after = terms("2" * 40, name)
            reused += sum(n for h, n in after if h in before)
            total += sum(n for _, n in after)
        # At most two chunks (128 KiB each at most) around each site are new too.
        assert total - new_bytes - sites * 2 * 128 * 1024 <= reused <= total - new_bytes
        assert reused / total > 0.85
        if not restart:
            paths = hf_download(m.url, "Org/Up", tmp_path, revision="2" * 40, files=sorted(new))
            assert [p.read_bytes() for p in paths] == [new[n] for n in sorted(new)]


def test_reconstructions_and_xorbs_on_ports_of_their_own(xet_repo: GeneratedRepo, tmp_path: Path) -> None:
    with start_xet_mirror(FolderBackend(xet_repo.root), tmp_path / "xet", cas_port=0, xorb_port=0) as m:
        hub, cas, xorbs = (m.server.port_of(r) for r in ("hub", "cas", "xorb"))
        assert len({hub, cas, xorbs}) == 3
        [folder] = hf_download(m.url, "Org/Xet", tmp_path)
        assert_files(folder, xet_repo)
        ports = {r.route_kind: r.server_port for r in m.faults.records()}
        assert (ports["resolve"], ports["xet-read-token"], ports["reconstruction"], ports["xorb"]) == (
            hub, hub, cas, xorbs)
        # Each port answers its own routes only, as separate hosts would.
        file_id = request(m.url, "HEAD", "/Org/Xet/resolve/main/model.safetensors").header("X-Xet-Hash")
        assert request(m.url, path=f"/v2/reconstructions/{file_id}").status == 404
        assert request(f"http://127.0.0.1:{cas}", path="/api/models/Org/Xet/revision/main").status == 404


def test_clients_without_hf_xet_still_get_plain_http(xet_repo: GeneratedRepo, tmp_path: Path) -> None:
    with start_xet_mirror(FolderBackend(xet_repo.root), tmp_path / "xet") as m:
        [folder] = hf_download(m.url, "Org/Xet", tmp_path, xet=False)
        assert_files(folder, xet_repo)
        log = m.faults.records()
    assert not [r for r in log if r.route_kind in ("reconstruction", "xorb", "xet-read-token")]
    assert {r.file_path for r in log if r.route_kind == "resolve" and r.method == "GET"} == set(xet_repo.files)


def test_a_blob_not_yet_chunked_is_served_plainly_and_chunked_first(xet_repo: GeneratedRepo, tmp_path: Path) -> None:
    with start_xet_mirror(FolderBackend(xet_repo.root), tmp_path / "xet", build_at_start=False) as m:
        assert m.server.xet is not None
        head = request(m.url, "HEAD", "/Org/Xet/resolve/main/sub/extra.bin")
        assert head.status == 200 and head.header("X-Xet-Hash") is None and head.header("Link") is None
        assert m.server.xet.builder.wait_idle(60)
        head = request(m.url, "HEAD", "/Org/Xet/resolve/main/sub/extra.bin")
        assert head.header("X-Xet-Hash") and 'rel="xet-auth"' in (head.header("Link") or "")
        assert m.server.xet.builder.built == 1  # only the blob a client asked for


def test_records_are_kept_across_restarts_and_dropped_when_a_blob_changes(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repos", "Org/Keep", {"w.bin": random_bytes(2 * MiB, 7)})
    with start_xet_mirror(FolderBackend(repo.root), tmp_path / "xet") as m:
        first = request(m.url, "HEAD", "/Org/Keep/resolve/main/w.bin").header("X-Xet-Hash")
    with start_xet_mirror(FolderBackend(repo.root), tmp_path / "xet") as m:
        assert m.server.xet is not None and m.server.xet.builder.built == 0
        assert request(m.url, "HEAD", "/Org/Keep/resolve/main/w.bin").header("X-Xet-Hash") == first
        (repo.path / "w.bin").write_bytes(random_bytes(2 * MiB, 8))  # changed in place: a new blob
        m.server.xet.records._recheck = 0
        assert m.server.xet.records.usable(xet_sha(repo, "w.bin")) is None
        assert not (tmp_path / "xet" / "files" / f"{xet_sha(repo, 'w.bin')}.json").exists()
    # A blob that goes away while the mirror is down: its record goes at the next start.
    (repo.path / "w.bin").unlink()
    (repo.path / "v.bin").write_bytes(random_bytes(MiB, 10))
    start_xet_mirror(FolderBackend(repo.root), tmp_path / "xet").stop()
    v_sha = hashlib.sha256((repo.path / "v.bin").read_bytes()).hexdigest()
    assert [p.name for p in (tmp_path / "xet" / "files").iterdir()] == [f"{v_sha}.json"]
    (repo.path / "v.bin").unlink()
    with start_xet_mirror(FolderBackend(repo.root), tmp_path / "xet"):
        assert not list((tmp_path / "xet" / "files").iterdir())


def xet_sha(repo: GeneratedRepo, name: str) -> str:
    return repo.files[name].sha256


def test_compressed_xorbs_are_stored_and_served_as_the_hubs_are(tmp_path: Path) -> None:
    """With compression on, chunks that shrink are LZ4 or BG4-LZ4 (the Hub's schemes), the
    xorbs are kept under xet/xorbs, stock hf_xet decodes them, and fewer bytes cross the wire."""
    floats = np.sin(np.arange(2 * MiB // 4, dtype=np.float32) / 50.0).astype(np.float32).tobytes()
    text = b"".join(b"line %d of a compressible file\n" % i for i in range(60_000))
    data = random_bytes(MiB, 9) + floats + text + bytes(MiB)
    repo = make_repo(tmp_path / "repos", "Org/Z", {"z.safetensors": data})
    with start_xet_mirror(FolderBackend(repo.root), tmp_path / "xet", compression="auto") as m:
        [path] = hf_download(m.url, "Org/Z", tmp_path, files=["z.safetensors"])
        assert path.read_bytes() == data
        sent = sum(r.bytes_sent for r in m.faults.of_kind("xorb"))
        stored = list((tmp_path / "xet" / "xorbs").iterdir())
        schemes = {h.scheme for f in stored for h in read_headers(f.read_bytes())}
        assert schemes >= {0, 1} and sent < 0.75 * len(data)
        assert sum(f.stat().st_size for f in stored) == sent  # each chunk once
        # The blob changes: its record goes, and its stored xorbs with it.
        assert m.server.xet is not None
        (repo.path / "z.safetensors").write_bytes(data[::-1])
        m.server.xet.records._recheck = 0
        assert m.server.xet.records.usable(repo.files["z.safetensors"].sha256) is None
        assert not [f for f in stored if f.exists()]


def test_a_pull_through_mirror_serves_xet_once_it_holds_the_verified_blob(
        xet_repo: GeneratedRepo, tmp_path: Path) -> None:
    """The first client gets the file over plain HTTP while the mirror fetches it upstream
    (once); once verified in the store it is chunked, and the next client gets it through Xet."""
    size = xet_repo.files["model.safetensors"].size
    with start_mirror(FolderBackend(xet_repo.root)) as upstream:
        home = tmp_path / "home"
        home.mkdir()
        mirror, _ = start_pull_through(pull_through_settings(home, upstream.url),
                                       xet=XetOptions(folder=home / "qwenhome" / "xet"))
        with mirror:
            assert mirror.server.xet is not None
            [first] = hf_download(mirror.url, "Org/Xet", tmp_path / "a", files=["model.safetensors"])
            assert sha256_file(first) == xet_repo.files["model.safetensors"].sha256
            assert not mirror.faults.of_kind("reconstruction")
            assert mirror.server.xet.builder.wait_idle(60)
            [second] = hf_download(mirror.url, "Org/Xet", tmp_path / "b", files=["model.safetensors"])
            assert sha256_file(second) == xet_repo.files["model.safetensors"].sha256
            assert [r.status for r in mirror.faults.of_kind("reconstruction")] == [200]
            assert size < sum(r.bytes_sent for r in mirror.faults.of_kind("xorb")) < size * 1.001 + 4096
    assert upstream.faults.bytes_sent("model.safetensors") == size  # fetched upstream once
