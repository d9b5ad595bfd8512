"""Request targets and Range headers parse exactly as the Hub's clients send them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwenhome.mirror import BadTarget, StoreBackend, parse_range, parse_target
from qwenhome.mirror.protocol import Unsatisfiable
from tests.support.http import request
from tests.support.mirror import start_mirror
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
