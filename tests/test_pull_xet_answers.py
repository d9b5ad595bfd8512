"""A Xet server whose answers cannot be used: qwenhome says why, in the
pull's events with a stable code, and the file comes from the resolve bridge,
verified. Real ``qwenhome pull`` processes against the project's Xet server
(``qwenhome mirror`` with Xet on), its reconstructions rewritten by the test's
fault hooks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from qwenhome.mirror import FolderBackend, RequestInfo
from tests.support.cli import run_cli
from tests.support.faults import kind
from tests.support.http import request
from tests.support.mirror import Mirror
from tests.support.repos import GeneratedRepo, make_repo, sha256_file
from tests.support.xet_mirror import (
    random_bytes,
    reconstruction,
    refuse_bridge,
    start_xet_mirror,
    token_for,
)

MiB = 1 << 20
MODEL = "model.safetensors"
SIZE = 6 * MiB + 3
RECONSTRUCTION = kind("reconstruction")


def ranged(info: RequestInfo) -> bool:
    """The engine's reconstructions of pieces (with ``Range``), not the whole file's (the recipe)."""
    return RECONSTRUCTION(info) and info.range is not None


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> GeneratedRepo:
    root = tmp_path_factory.mktemp("xet-answer-repos")
    return make_repo(root, "Org/XetAnswers", {MODEL: random_bytes(SIZE, 7), "config.json": b"{}\n"})


@pytest.fixture
def xm(repo: GeneratedRepo, tmp_path: Path) -> Iterator[Mirror]:
    with start_xet_mirror(FolderBackend(repo.root), tmp_path / "xet", cas_port=0, xorb_port=0) as m:
        yield m


def pull_events(home: Path, m: Mirror) -> list[dict[str, object]]:
    """``qwenhome pull --json`` (stall time-out short): its events; the pull must succeed.
    The bridge's first answers wait a second: the engine takes a Xet file's
    ranges from both sides at once, and the bridge must not end the file
    before Xet has had its say."""
    m.faults.latency(1.0, times=4, path=MODEL, method="GET")
    (home / "qwenhome").mkdir(parents=True)
    (home / "qwenhome" / "config.toml").write_text("[network]\nstall_timeout = 2.0\n")
    res = run_cli(["pull", "Org/XetAnswers", "--json"], home=home, endpoint=m.url, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    return [json.loads(line) for line in res.stdout.strip().splitlines()]


def xet_codes(events: list[dict[str, object]]) -> list[str]:
    """The codes of the events that say Xet gave something up (``xet: CODE: …``)."""
    out = []
    for e in events:
        msg = str(e.get("message", ""))
        if msg.startswith("xet: error["):
            out.append(msg[len("xet: error["):].split("]", 1)[0])
        elif msg.startswith("xet: "):
            out.append(msg[len("xet: "):].split(":", 1)[0].split(";", 1)[0])
    return out


def assert_pulled_from_the_bridge(home: Path, repo: GeneratedRepo, m: Mirror) -> None:
    snap = next((home / "hub" / "models--Org--XetAnswers" / "snapshots").iterdir())
    assert sha256_file(snap / MODEL) == repo.files[MODEL].sha256
    bridge = sum(r.bytes_sent for r in m.faults.of_kind("resolve") if r.method == "GET" and r.file_path == MODEL)
    assert bridge > 0, "the bridge carried the file's rest"


def whole_answer(m: Mirror, repo: GeneratedRepo) -> dict[str, object]:
    """The server's own reconstruction of the whole model file (v2)."""
    tok = token_for(m.url, repo.repo_id, "main")
    resp = request(m.url, "HEAD", f"/{repo.repo_id}/resolve/main/{MODEL}")
    file_hash = resp.header("X-Xet-Hash")
    assert file_hash, resp.headers
    answer = reconstruction(tok, file_hash)
    assert answer.status == 200, answer.body
    doc: dict[str, object] = json.loads(answer.body)
    return doc


def test_a_reconstruction_refused_with_a_fresh_token_too_is_xet_refused(
        xm: Mirror, repo: GeneratedRepo, tmp_path: Path) -> None:
    """401 on every reconstruction: one fresh token, asked once more, then
    no third try; the file comes plainly."""
    xm.faults.fail(401, times=None, predicate=kind("reconstruction"))
    events = pull_events(tmp_path / "home", xm)
    codes = xet_codes(events)
    assert codes and all(code == "xet-refused" for code in codes), events
    assert_pulled_from_the_bridge(tmp_path / "home", repo, xm)
    tokens = xm.faults.of_kind("xet-read-token")
    recons = xm.faults.of_kind("reconstruction")
    assert len(recons) == 2 and len(tokens) == 2, (len(recons), len(tokens))


def test_reconstructions_that_leave_bytes_unfilled_end_xet_for_the_file_as_xet_incomplete(
        xm: Mirror, repo: GeneratedRepo, tmp_path: Path) -> None:
    """The whole file's recipe is fine, but every piece's reconstruction
    names no term: a few rounds, then the bridge takes what is left."""
    empty = {"offset_into_first_range": 0, "terms": [], "xorbs": {}}
    xm.faults.respond(200, json.dumps(empty), predicate=ranged)
    events = pull_events(tmp_path / "home", xm)
    codes = xet_codes(events)
    assert codes[-1] == "xet-incomplete", events
    assert_pulled_from_the_bridge(tmp_path / "home", repo, xm)
    assert sum(r.bytes_sent for r in xm.faults.of_kind("xorb")) == 0


def test_a_term_split_over_two_fetch_ranges_is_xet_unsupported(xm: Mirror, repo: GeneratedRepo,
                                                               tmp_path: Path) -> None:
    """A server that cuts one term's chunks over two fetch ranges: its
    chunks cannot be placed one range at a time; refused at once, not
    retried, and the file comes from the bridge."""
    doc = whole_answer(xm, repo)
    terms = doc["terms"]
    assert isinstance(terms, list)
    term = next(t for t in terms if t["range"]["end"] - t["range"]["start"] >= 2)
    xorbs = doc["xorbs"]
    assert isinstance(xorbs, dict)
    split: list[dict[str, object]] = []
    for fetch in xorbs[term["hash"]]:
        ranges = []
        for r in fetch["ranges"]:
            a, b = r["chunks"]["start"], r["chunks"]["end"]
            if a <= term["range"]["start"] and term["range"]["end"] <= b:
                mid = term["range"]["start"] + 1
                cut = (r["bytes"]["start"] + r["bytes"]["end"]) // 2
                ranges += [{"chunks": {"start": a, "end": mid}, "bytes": {"start": r["bytes"]["start"], "end": cut}},
                           {"chunks": {"start": mid, "end": b}, "bytes": {"start": cut + 1, "end": r["bytes"]["end"]}}]
            else:
                ranges.append(r)
        split.append({**fetch, "ranges": ranges})
    xorbs[term["hash"]] = split
    xm.faults.respond(200, json.dumps(doc), predicate=ranged)
    events = pull_events(tmp_path / "home", xm)
    codes = xet_codes(events)
    assert codes and all(code == "xet-unsupported" for code in codes), events
    assert_pulled_from_the_bridge(tmp_path / "home", repo, xm)



def test_a_cas_that_ignores_range_on_reconstructions_still_serves_the_file_once(
        xm: Mirror, repo: GeneratedRepo, tmp_path: Path) -> None:
    """A CAS that answers every piece's reconstruction with the whole file's
    (the ``Range`` ignored, as a server without ranged reconstructions
    would): with the bridge refusing bodies, Xet alone serves the file,
    verified, and its one xorb range is fetched about once, not once per
    piece (three were asked before: 3x the file). A second pass can come
    when the first skipped bytes a bridge range held, which the bridge
    then refused."""
    doc = whole_answer(xm, repo)
    xm.faults.respond(200, json.dumps(doc), predicate=ranged, times=None)
    refuse_bridge(xm.faults)
    home = tmp_path / "home"
    (home / "qwenhome").mkdir(parents=True)
    res = run_cli(["pull", "Org/XetAnswers", "--json"], home=home, endpoint=xm.url, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    snap = next((home / "hub" / "models--Org--XetAnswers" / "snapshots").iterdir())
    assert sha256_file(snap / MODEL) == repo.files[MODEL].sha256
    xorb = sum(r.bytes_sent for r in xm.faults.of_kind("xorb"))
    assert 0 < xorb <= 2 * SIZE + 4096, xorb
