"""The mirror's CAS and xorb URLs over HTTP: bytes, ranges, credentials, and faults for Xet clients.

Xorbs are synthesized from the blob; their bytes are checked against a xorb
built the ordinary way (``qwenhome.xet``) from the same file.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from qwenhome.mirror import FolderBackend
from qwenhome.mirror.cas.body import fill
from qwenhome.mirror.cas.building import Builder, Job
from qwenhome.mirror.cas.records import Records
from qwenhome.xet import Policy, Xorb, build_stream, parse_reconstruction
from qwenhome.xet.xorb import iter_chunks
from tests.support.faults import kind
from tests.support.http import Connection, request
from tests.support.mirror import Mirror
from tests.support.repos import GeneratedRepo, make_repo, sha256_file
from tests.support.xet_mirror import (
    get_url,
    hf_download,
    random_bytes,
    reconstruction,
    start_xet_mirror,
    token_for,
)

MiB = 1 << 20
DATA = random_bytes(5 * MiB + 77, 11)


@pytest.fixture(scope="module")
def cas_repo(tmp_path_factory: pytest.TempPathFactory) -> GeneratedRepo:
    root = tmp_path_factory.mktemp("cas-repos")
    make_repo(root, "Org/Other", {"o.bin": random_bytes(100_000, 12)})
    return make_repo(root, "Org/Cas", {"w.bin": DATA, "README.md": b"# cas\n"})


@pytest.fixture
def cas(cas_repo: GeneratedRepo, tmp_path: Path) -> Mirror:
    with start_xet_mirror(FolderBackend(cas_repo.root), tmp_path / "xet") as m:
        yield m


def _file_id(m: Mirror, name: str = "w.bin", repo: str = "Org/Cas") -> str:
    file_id = request(m.url, "HEAD", f"/{repo}/resolve/main/{name}").header("X-Xet-Hash")
    assert file_id
    return file_id


def _fetch_all(answer_body: bytes) -> bytes:
    """What a client does with a v2 answer: fetch each URL with its ranges, decode, join the terms."""
    answer = parse_reconstruction(answer_body)
    chunks: dict[tuple[str, int], bytes] = {}
    for xorb, fetches in answer.xorbs.items():
        for f in fetches:
            for r in f.ranges:
                resp = get_url(f.url, {"Range": f"bytes={r.bytes.start}-{r.bytes.end}"})
                assert resp.status == 206, resp.body
                for c in iter_chunks(resp.body, first_index=r.chunks.start, count=len(r.chunks)):
                    chunks[(xorb, c.index)] = c.data
    out = b"".join(chunks[(t.hash, i)] for t in answer.terms for i in range(t.range.start, t.range.end))
    return out[answer.offset_into_first_range:]


def test_synthesized_xorb_bytes_equal_a_built_xorb(tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    data = random_bytes(3 * MiB, 13) + bytes(300_000) + random_bytes(2 * MiB, 14)
    blob.write_bytes(data)
    records = Records(tmp_path / "xet")
    header = Builder(records).build(Job(hashlib.sha256(data).hexdigest(), str(blob), len(data), "g"))
    assert header is not None
    built: dict[str, Xorb] = {}
    reference = build_stream(io.BytesIO(data), lambda x: built.__setitem__(x.info.hex, x), policy=Policy.NONE)
    assert reference.recipe.file_hash == header.file_hash and set(built) == set(header.owns)
    rng = random.Random(1)
    with open(blob, "rb") as fh:
        for h, x in built.items():
            layout = records.xorb(h)
            assert layout is not None and layout.info == x.info
            spans = [(0, len(x.data))] + [sorted(rng.sample(range(len(x.data) + 1), 2)) for _ in range(200)]
            spans += [(o - 3, o + 5) for o in x.info.offsets[1:-1][:20]]  # across chunk headers
            for a, b in spans:
                out = bytearray(b - a)
                fill(layout, fh.fileno(), a, memoryview(out))
                assert bytes(out) == x.data[a:b], (a, b)


def test_reconstruction_ranges_rebuild_exactly_the_bytes_asked(cas: Mirror) -> None:
    token = token_for(cas.url, "Org/Cas", "main")
    file_id = _file_id(cas)
    assert _fetch_all(reconstruction(token, file_id).body) == DATA
    for a, b in [(0, 0), (1, 99_999), (65_530, 300_001), (len(DATA) - 10, len(DATA) - 1), (4 * MiB, 10 * MiB)]:
        resp = reconstruction(token, file_id, file_range=f"bytes={a}-{b}")
        assert resp.status == 200
        got = _fetch_all(resp.body)
        assert got[:b - a + 1] == DATA[a:b + 1]
    v1 = json.loads(reconstruction(token, file_id, version=1).body)
    assert "fetch_info" in v1 and "xorbs" not in v1
    assert reconstruction(token, file_id, file_range=f"bytes={len(DATA)}-{len(DATA) + 5}").status == 416
    assert reconstruction(token, file_id, file_range="bytes=5").status == 400
    assert reconstruction(token, "0" * 64).status == 404


def _one_url(cas: Mirror) -> tuple[str, int, int]:
    """A signed xorb URL of the file's first term and the byte range it signs."""
    answer = json.loads(reconstruction(token_for(cas.url, "Org/Cas", "main"), _file_id(cas)).body)
    fetch = next(iter(answer["xorbs"].values()))[0]
    rng = fetch["ranges"][0]["bytes"]
    return fetch["url"], rng["start"], rng["end"]


def test_xorb_urls_serve_only_their_signed_ranges_until_they_expire(cas_repo: GeneratedRepo, tmp_path: Path) -> None:
    with start_xet_mirror(FolderBackend(cas_repo.root), tmp_path / "xet", url_ttl=2) as m:
        url, a, b = _one_url(m)
        assert get_url(url, {"Range": f"bytes={a}-{b}"}).status == 206
        assert get_url(url, {"Range": f"bytes={a + 10}-{a + 20}"}).status == 206  # inside: fine
        two = get_url(url, {"Range": f"bytes={a}-{a + 9},{a + 100}-{a + 199}"})
        assert two.status == 206 and two.header("Content-Type").startswith("multipart/byteranges")
        for rng in (f"bytes={a}-{b + 1}", f"bytes={b + 1}-{b + 2}", f"bytes={a}-{a + 9},{b}-{b + 1}", "", "bytes=0-"):
            assert get_url(url, {"Range": rng} if rng else {}).status == 403, rng
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        for field, value in (("Signature", "0" * 40), ("Expires", str(int(time.time()) + 3600)),
                             ("X-Xet-Signed-Range", f"bytes=0-{b + 1000}")):
            forged = {**{k: v[0] for k, v in query.items()}, field: value}
            resp = get_url(f"{parts.scheme}://{parts.netloc}{parts.path}?{urlencode(forged)}", {"Range": f"bytes={a}-{b}"})
            assert resp.status == 403, field
        other = url.replace(parts.path.rsplit("/", 1)[1], "f" * 64)  # another xorb, same signature
        assert get_url(other, {"Range": f"bytes={a}-{b}"}).status == 403
        time.sleep(2.2)
        expired = get_url(url, {"Range": f"bytes={a}-{b}"})
        assert expired.status == 403 and b"expired" in expired.body


def test_multipart_answers_carry_each_range_exactly(cas: Mirror) -> None:
    url, a, b = _one_url(cas)
    single = get_url(url, {"Range": f"bytes={a}-{b}"}).body
    ranges = [(a, a + 9), (a + 5000, a + 70_000), (b - 3, b)]
    resp = get_url(url, {"Range": "bytes=" + ",".join(f"{x}-{y}" for x, y in ranges)})
    boundary = resp.header("Content-Type").split("boundary=")[1]
    parts = resp.body.split(f"--{boundary}".encode())
    assert parts[0] == b"" and parts[-1] == b"--\r\n" and len(parts) == len(ranges) + 2
    for part, (x, y) in zip(parts[1:-1], ranges, strict=True):
        head, _, data = part.partition(b"\r\n\r\n")
        assert f"Content-Range: bytes {x}-{y}/".encode() in head
        assert data[:-2] == single[x - a:y - a + 1] and data.endswith(b"\r\n")
    assert int(resp.header("Content-Length")) == len(resp.body)


def test_the_cas_takes_only_live_access_tokens_of_the_files_repository(cas_repo: GeneratedRepo, tmp_path: Path) -> None:
    with start_xet_mirror(FolderBackend(cas_repo.root), tmp_path / "xet", token="team", token_ttl=2) as m:
        assert request(m.url, path="/api/models/Org/Cas/xet-read-token/main").status == 401
        token = token_for(m.url, "Org/Cas", "main", token="team")
        assert token.cas_url == m.url and token.exp <= time.time() + 3
        head = request(m.url, "HEAD", "/Org/Cas/resolve/main/w.bin", {"Authorization": "Bearer team"})
        file_id = head.header("X-Xet-Hash")
        assert file_id and f"{m.url}/api/models/Org/Cas/xet-read-token/" in (head.header("Link") or "")
        assert reconstruction(token, file_id).status == 200
        for auth in ("", "Bearer team", "Bearer " + token.access_token[:-1] + "x", token.access_token):
            assert reconstruction(token, file_id, authorization=auth).status == 401, auth
        other = token_for(m.url, "Org/Other", "main", token="team")
        assert reconstruction(other, file_id).status == 403
        resp = request(m.url, path="/api/models/Org/Cas/xet-write-token/main", headers={"Authorization": "Bearer team"})
        assert resp.status == 403
        time.sleep(2.2)
        assert reconstruction(token, file_id).status == 401


def test_paths_info_lists_xet_hashes(cas: Mirror) -> None:
    body = urlencode({"paths": ["w.bin", "README.md", "nope"]}, doseq=True)
    with Connection(cas.url) as conn:
        conn.conn.request("POST", "/api/models/Org/Cas/paths-info/main", body=body,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
        resp = conn.conn.getresponse()
        found = json.loads(resp.read())
    assert resp.status == 200
    assert {e["path"]: e.get("xetHash") for e in found} == {"w.bin": _file_id(cas), "README.md": None}
    assert request(cas.url, path="/api/models/Org/Cas/paths-info/main").status == 405


def test_faults_on_the_xet_routes(cas: Mirror) -> None:
    url, a, b = _one_url(cas)
    want = get_url(url, {"Range": f"bytes={a}-{b}"}).body
    cas.faults.corrupt(20_000, predicate=kind("xorb"))
    bad = get_url(url, {"Range": f"bytes={a}-{b}"}).body
    assert [i for i in range(len(want)) if want[i] != bad[i]] == [20_000]
    cas.faults.fail(503, predicate=kind("reconstruction"))
    assert reconstruction(token_for(cas.url, "Org/Cas", "main"), _file_id(cas)).status == 503
    cas.faults.drop_after(100_000, predicate=kind("xorb"))
    parts = urlsplit(url)
    with Connection(url) as conn:
        _, got, error = conn.read_body_until_error("GET", f"{parts.path}?{parts.query}", {"Range": f"bytes={a}-{b}"})
    assert error is not None and got == want[:100_000]
    sent = {r.route_kind: 0 for r in cas.faults.records()}
    for r in cas.faults.records():
        sent[r.route_kind] += r.bytes_sent
    assert {k: v[1] for k, v in cas.server.stats().items()}["xorb"] == sent["xorb"] == 2 * len(want) + 100_000


def test_stock_hf_xet_rides_out_a_503_and_a_dropped_xorb_body(cas_repo: GeneratedRepo, tmp_path: Path) -> None:
    with start_xet_mirror(FolderBackend(cas_repo.root), tmp_path / "xet") as m:
        m.faults.fail(503, times=1, predicate=kind("reconstruction"))
        m.faults.drop_after(300_000, times=1, predicate=kind("xorb"))
        [path] = hf_download(m.url, "Org/Cas", tmp_path, files=["w.bin"])
        assert sha256_file(path) == cas_repo.files["w.bin"].sha256
        log = [(r.route_kind, r.status, r.error) for r in m.faults.records() if r.route_kind in ("reconstruction", "xorb")]
    assert log[:2] == [("reconstruction", 503, None), ("reconstruction", 200, None)]
    assert log[2] == ("xorb", 206, "dropped by fault") and log[-1] == ("xorb", 206, None)


def test_stock_hf_xet_asks_again_for_an_expired_xorb_url(cas_repo: GeneratedRepo, tmp_path: Path) -> None:
    """The URL expires while its request waits (403): the client asks for the reconstruction again.
    (hf_xet waits a second or more before retrying: URLs must outlive that, as the Hub's do.)"""
    with start_xet_mirror(FolderBackend(cas_repo.root), tmp_path / "xet", url_ttl=6) as m:
        m.faults.latency(6.5, times=1, predicate=kind("xorb"))
        [path] = hf_download(m.url, "Org/Cas", tmp_path, files=["w.bin"])
        assert sha256_file(path) == cas_repo.files["w.bin"].sha256
        log = [(r.route_kind, r.status) for r in m.faults.records() if r.route_kind in ("reconstruction", "xorb")]
    assert log[:3] == [("reconstruction", 200), ("xorb", 403), ("reconstruction", 200)]
    assert log[-1] == ("xorb", 206)


def test_stock_hf_xet_gets_new_tokens_when_they_expire_mid_pull(tmp_path: Path) -> None:
    """Tokens live 2 s and each xorb answer waits 2.5 s: the second file's reconstruction needs
    a new token, which the client asks the token route for (the CAS refuses expired ones, 401)."""
    repo = make_repo(tmp_path / "repos", "Org/T", {"a.bin": random_bytes(MiB, 21), "b.bin": random_bytes(MiB, 22)})
    with start_xet_mirror(FolderBackend(repo.root), tmp_path / "xet", token_ttl=2) as m:
        m.faults.latency(2.5, predicate=kind("xorb"))
        paths = hf_download(m.url, "Org/T", tmp_path, files=["a.bin", "b.bin"])
        assert [sha256_file(p) for p in paths] == [repo.files[n].sha256 for n in ("a.bin", "b.bin")]
        log = m.faults.records()
    recons = [r for r in log if r.route_kind == "reconstruction"]
    tokens = [r for r in log if r.route_kind == "xet-read-token"]
    assert [r.status for r in recons] == [200, 200] and recons[1].started - recons[0].started > 2
    assert any(recons[0].started < t.started < recons[1].started for t in tokens)  # a new token in between


def test_a_xorb_host_that_went_away_refuses_connections(cas_repo: GeneratedRepo, tmp_path: Path) -> None:
    with start_xet_mirror(FolderBackend(cas_repo.root), tmp_path / "xet", xorb_port=0) as m:
        url, a, b = _one_url(m)
        assert urlsplit(url).port == m.server.port_of("xorb") != m.server.port
        m.server.stop_listener("xorb")
        with pytest.raises(ConnectionRefusedError):
            get_url(url, {"Range": f"bytes={a}-{b}"})
        assert reconstruction(token_for(m.url, "Org/Cas", "main"), _file_id(m)).status == 200


def test_existence_checks_answer_head_with_the_size(cas: Mirror) -> None:
    assert cas.server.xet is not None
    token = token_for(cas.url, "Org/Cas", "main")
    auth = {"Authorization": f"Bearer {token.access_token}"}
    header = cas.server.xet.records.headers()
    xorb = next(h.owns[0] for h in header if h.size == len(DATA))
    layout = cas.server.xet.records.xorb(xorb)
    assert layout is not None
    for path, size in ((f"/v1/files/{_file_id(cas)}", len(DATA)), (f"/v1/xorbs/default/{xorb}", layout.info.size)):
        resp = request(cas.url, "HEAD", path, auth)
        assert (resp.status, resp.header("Content-Length")) == (200, str(size))
        assert request(cas.url, "GET", path, auth).status == 405
        assert request(cas.url, "HEAD", path).status == 401
    assert request(cas.url, "HEAD", f"/v1/files/{'0' * 64}", auth).status == 404


def test_a_stalled_xorb_body_resumes_and_a_xorb_host_can_be_a_name_that_does_not_resolve(
        cas_repo: GeneratedRepo, tmp_path: Path) -> None:
    from tests.support.deadnet import UNRESOLVABLE_URL

    dead = urlsplit(UNRESOLVABLE_URL).hostname
    with start_xet_mirror(FolderBackend(cas_repo.root), tmp_path / "xet", xorb_port=0, xorb_host=dead) as m:
        url, a, b = _one_url(m)
        assert urlsplit(url).hostname == dead  # clients meet a DNS failure (a .invalid name)
        local = url.replace(f"//{dead}:", "//127.0.0.1:")
        m.faults.stall(1000, 1.0, predicate=kind("xorb"))
        started = time.monotonic()
        resp = get_url(local, {"Range": f"bytes={a}-{b}"})
        assert resp.status == 206 and len(resp.body) == b - a + 1 and time.monotonic() - started >= 1.0
