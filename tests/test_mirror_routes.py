"""Request targets, Range headers and query numbers parse exactly as the Hub's
clients send them, bounded whatever their length; every route is read-only."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from qwenhome.mirror import BadTarget, StoreBackend, parse_range, parse_target
from qwenhome.mirror.protocol import BadQuery, Unsatisfiable, count_param
from tests.support.http import Connection, request
from tests.support.mirror import Mirror, start_mirror
from tests.support.repos import GeneratedRepo, make_store_repo


@pytest.mark.parametrize(
    ("target", "kind", "repo_type", "repo_id", "revision", "path"),
    [
        ("/api/models/Org/N/revision/main?blobs=true", "info", "model", "Org/N", "main", ""),
        ("/api/models/Org/N/revision/refs%2Fpr%2F1", "info", "model", "Org/N", "refs/pr/1", ""),
        ("/api/datasets/Org/N", "info", "dataset", "Org/N", "main", ""),
        ("/api/models/Org/N/tree/main?recursive=true", "tree", "model", "Org/N", "main", ""),
        ("/api/models/Org/N/tree/v1.0/a%2Fb", "tree", "model", "Org/N", "v1.0", "a/b"),
        ("/Org/N/resolve/main/a/b%20c.json", "resolve", "model", "Org/N", "main", "a/b c.json"),
        ("/datasets/Org/N/resolve/" + "a" * 40 + "/x.bin", "resolve", "dataset", "Org/N", "a" * 40, "x.bin"),
        ("/Org/N/resolve/refs%2Fpr%2F2/x", "resolve", "model", "Org/N", "refs/pr/2", "x"),
        ("/api/models", "list", "model", "", "", ""),
    ],
)
def test_routes(target: str, kind: str, repo_type: str, repo_id: str, revision: str, path: str) -> None:
    r = parse_target(target)
    assert (r.kind, r.repo_type, r.repo_id, r.revision, r.path) == (kind, repo_type, repo_id, revision, path)


@pytest.mark.parametrize("target", [
    "/Org/N/resolve/main/../x", "/Org/N/resolve/main/%2e%2e/x", "/Org/N/resolve/main/a%2f..%2f..%2fx",
    "/Org/N/resolve/main/a%5cb", "/Org/N/resolve/main/a%00b", "/Org/N/resolve/main//x", "/Org/N/resolve/main/",
    "/Org/N/resolve/main/C:x", "/Org/N/resolve/main/%ff", "Org/N/resolve/main/x", "/Org/N/blob/main/x",
    "/api/spaces/Org/N", "/api/models/Org/N/tree/main/..", "/api/models/Org/N/unknown",
])
def test_bad_targets_rejected(target: str) -> None:
    with pytest.raises(BadTarget):
        parse_target(target)


@pytest.mark.parametrize(("header", "size", "expected"), [
    (None, 10, None), ("bytes=0-", 10, (0, 9)), ("bytes=2-4", 10, (2, 4)), ("bytes=-3", 10, (7, 9)),
    ("bytes=-30", 10, (0, 9)), ("bytes=5-100", 10, (5, 9)), ("bytes=1-2,4-5", 10, None),
    ("bytes=4-2", 10, None), ("lines=1-2", 10, None), ("bytes = 1 - 2", 10, (1, 2)),
])
def test_ranges(header: str | None, size: int, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(("header", "size"), [("bytes=10-", 10), ("bytes=-0", 10), ("bytes=0-", 0), ("bytes=-1", 0)])
def test_unsatisfiable_ranges(header: str, size: int) -> None:
    with pytest.raises(Unsatisfiable):
        parse_range(header, size)


def test_store_serves_pr_refs_and_tags(tmp_path: Path, small_repo: GeneratedRepo) -> None:
    hub = tmp_path / "hub"
    make_store_repo(hub, small_repo, commit="e" * 40, ref="refs/pr/1")
    (hub / "models--Org--Small" / "refs" / "v1.0").write_text("e" * 40)
    with start_mirror(StoreBackend(hub)) as m:
        for rev in ("refs%2Fpr%2F1", "v1.0"):
            info = json.loads(request(m.url, path=f"/api/models/Org/Small/revision/{rev}").body)
            assert info["sha"] == "e" * 40
            assert request(m.url, "HEAD", f"/Org/Small/resolve/{rev}/config.json").status == 200
        assert request(m.url, "HEAD", "/Org/Small/resolve/main/config.json").header("X-Error-Code") == "RevisionNotFound"


# -- numbers are bounded: any length of digits gets an answer -----------------------

HUGE = "9" * 5000  # beyond Python's int-string conversion limit (4,300 digits)


@pytest.mark.parametrize(("header", "size", "expected"), [
    (f"bytes=2-{HUGE}", 10, (2, 9)), (f"bytes=-{HUGE}", 10, (0, 9)), (f"bytes={'0' * 5000}1-2", 10, (1, 2)),
    ("bytes=\u0663-", 10, None),  # another script's digits are not a range
])
def test_ranges_with_any_number_of_digits(header: str, size: int, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, size) == expected


def test_range_starting_beyond_any_size_is_unsatisfiable() -> None:
    with pytest.raises(Unsatisfiable):
        parse_range(f"bytes={HUGE}-", 10)
    with pytest.raises(Unsatisfiable):
        parse_range(f"bytes={HUGE}-{HUGE}", 10)


@pytest.mark.parametrize(("query", "expected"), [
    ("", None), ("limit=", None), ("limit=7", 7), ("limit=007", 7), (f"limit={HUGE}", 10**18),
])
def test_count_parameters_are_bounded(query: str, expected: int | None) -> None:
    assert count_param(parse_target(f"/api/models?{query}"), "limit") == expected


@pytest.mark.parametrize("value", ["-1", "abc", "1.5", "%C2%B2", "%D9%A3", "1e3", " 1"])
def test_count_parameters_that_are_not_whole_numbers_are_refused(value: str) -> None:
    with pytest.raises(BadQuery):
        count_param(parse_target(f"/api/models?limit={value}"), "limit")


@pytest.fixture
def served(tmp_path: Path, small_repo: GeneratedRepo) -> Iterator[tuple[Mirror, Path]]:
    hub = tmp_path / "hub"
    make_store_repo(hub, small_repo, commit="e" * 40)
    with start_mirror(StoreBackend(hub), tree_page_size=2) as m:
        yield m, hub


def test_huge_numbers_in_headers_and_queries_get_an_answer_on_a_live_connection(
        served: tuple[Mirror, Path], small_repo: GeneratedRepo) -> None:
    m, _ = served
    data = (small_repo.path / "config.json").read_bytes()
    path = "/Org/Small/resolve/main/config.json"
    with Connection(m.url) as conn:
        r = conn.request("GET", path, {"Range": f"bytes={HUGE}-"})
        assert r.status == 416 and r.header("Content-Range") == f"bytes */{len(data)}"
        assert "range" in json.loads(r.body)["error"].lower()
        r = conn.request("GET", path, {"Range": f"bytes=1-{HUGE}"})
        assert r.status == 206 and r.body == data[1:]
        r = conn.request("GET", path, {"Range": f"bytes=-{HUGE}"})
        assert r.status == 206 and r.body == data
        r = conn.request("GET", f"/api/models?limit={HUGE}")
        assert r.status == 200 and [x["id"] for x in json.loads(r.body)] == ["Org/Small"]
        for bad in ("limit=%C2%B2", "limit=-1"):
            r = conn.request("GET", f"/api/models?{bad}")
            assert r.status == 400 and "limit" in json.loads(r.body)["error"], bad
            assert r.header("X-Error-Message")
        r = conn.request("GET", f"/api/models/Org/Small/tree/main?cursor={HUGE}")
        assert r.status == 200 and json.loads(r.body) == []
        r = conn.request("GET", "/api/models/Org/Small/tree/main?cursor=abc")
        assert r.status == 400 and "cursor" in json.loads(r.body)["error"]
        assert conn.request("GET", path).body == data  # the same connection still serves


# -- read-only -------------------------------------------------------------------------

def _state(root: Path) -> dict[str, tuple[int, int, int, str]]:
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns,
                                         os.readlink(p) if p.is_symlink() else "")
    return out


WRITE_METHODS = ["PUT", "POST", "DELETE", "PATCH"]


def test_every_route_refuses_writes_with_405_and_the_store_is_unchanged(served: tuple[Mirror, Path]) -> None:
    m, hub = served
    assert request(m.url, "HEAD", "/Org/Small/resolve/main/config.json").status == 200  # the listing is warm
    before = _state(hub.parent)
    routes = [
        "/api/models", "/api/datasets", "/api/models/Org/Small", "/api/models/Org/Small/revision/main",
        "/api/models/Org/Small/tree/main", "/api/models/Org/Small/tree/main/sub",
        "/Org/Small/resolve/main/config.json", "/Org/Small/resolve/main/model.safetensors",
        "/Org/Small/resolve/main/new-file.bin", "/Org/Absent/resolve/main/x", "/api/models/Org/New",
        "/cdn/0000/models/Org/Small/" + "e" * 40 + "/config.json", "/api/repos/create", "/unknown/route",
    ]
    for route in routes:
        for method in WRITE_METHODS:
            for body in (None, b'{"a": 1}'):
                with Connection(m.url) as conn:
                    headers = {"Content-Type": "application/json"} if body else {}
                    conn.conn.request(method, route, body=body, headers=headers)
                    resp = conn.conn.getresponse()
                    payload = resp.read()
                    assert resp.status == 405, (method, route, resp.status)
                    assert resp.getheader("Allow") == "GET, HEAD"
                    assert "read-only" in json.loads(payload)["error"]
                    assert resp.getheader("X-Error-Message")
    assert _state(hub.parent) == before
    # Reading still works, and nothing appeared.
    assert request(m.url, path="/api/models/Org/New").status == 404
    assert request(m.url, path="/Org/Small/resolve/main/new-file.bin").status == 404


def test_a_refused_request_body_is_never_read_as_the_next_request(served: tuple[Mirror, Path]) -> None:
    """A PUT's body could hold a second request; the mirror closes instead of parsing it."""
    m, _ = served
    smuggled = b"GET /Org/Small/resolve/main/config.json HTTP/1.1\r\nHost: x\r\n\r\n"
    for framing in (b"Content-Length: %d\r\n\r\n" % len(smuggled) + smuggled,
                    b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(smuggled) + smuggled + b"\r\n0\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", m.server.port), timeout=5) as sock:
            sock.sendall(b"PUT /Org/Small/resolve/main/config.json HTTP/1.1\r\nHost: x\r\n" + framing)
            got = b""
            while chunk := sock.recv(65536):
                got += chunk
        assert got.startswith(b"HTTP/1.1 405 "), got[:100]
        assert got.count(b"HTTP/1.1 ") == 1, got  # one answer, then the connection closed


def test_a_write_with_a_token_set_is_refused_after_the_token_check(tmp_path: Path, small_repo: GeneratedRepo) -> None:
    hub = tmp_path / "hub"
    make_store_repo(hub, small_repo, commit="e" * 40)
    with start_mirror(StoreBackend(hub), token="s3") as m:
        assert request(m.url, "DELETE", "/Org/Small/resolve/main/config.json").status == 401
        ok = request(m.url, "DELETE", "/Org/Small/resolve/main/config.json", {"Authorization": "Bearer s3"})
        assert ok.status == 405
    assert (hub / "models--Org--Small" / "snapshots" / ("e" * 40) / "config.json").is_file()
