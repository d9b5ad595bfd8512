"""A Xet file's bytes come from xorb ranges and the resolve bridge together,
each kind with its share of the connections: the faster carries more. Real
processes against the project's Xet server (xorbs on a port of their own);
the server's own byte counters, per route, say which way the bytes came."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qwenhome.mirror import FolderBackend
from tests.support.cli import run_cli
from tests.support.faults import kind
from tests.support.mirror import Mirror
from tests.support.repos import GeneratedRepo, make_repo, sha256_file
from tests.support.xet_mirror import random_bytes, start_xet_mirror

MiB = 1 << 20
MODEL = "model.safetensors"
SLOW = 3_000_000  # bytes/s per connection of the slowed route
MAX_CONNECTIONS = 8  # both routes get half: the cap per connection is the limit on the slowed one


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> GeneratedRepo:
    root = tmp_path_factory.mktemp("xet-mix-repos")
    return make_repo(root, "Org/XetMix", {MODEL: random_bytes(128 * MiB + 3, 7), "extra.bin": random_bytes(MiB, 8),
                                          "config.json": b'{"model_type": "qwen2"}\n'})


@pytest.fixture
def xm(repo: GeneratedRepo, tmp_path: Path) -> Iterator[Mirror]:
    with start_xet_mirror(FolderBackend(repo.root), tmp_path / "xet", cas_port=0, xorb_port=0) as m:
        yield m


def sent(m: Mirror, route: str) -> int:
    """Body bytes the server sent on one kind of route, in answers with content."""
    return sum(r.bytes_sent for r in m.faults.of_kind(route) if r.method == "GET" and r.status < 300)


def pull_verified(m: Mirror, repo: GeneratedRepo, tmp_path: Path) -> dict[str, object]:
    home = tmp_path / "home"
    res = run_cli(["pull", repo.repo_id, "--json", "--connections", str(MAX_CONNECTIONS)], home=home,
                  endpoint=m.url, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    snap = next((home / "hub" / ("models--" + repo.repo_id.replace("/", "--")) / "snapshots").iterdir())
    for rel, f in repo.files.items():
        assert sha256_file(snap / rel) == f.sha256, rel
    assert not list((home / "qwenhome" / "partials").glob("*.part")), "no partial file left"
    result: dict[str, object] = json.loads(res.stdout.strip().splitlines()[-1])
    return result


def lfs_bytes(repo: GeneratedRepo) -> int:
    return sum(f.size for f in repo.files.values() if f.lfs)


def test_a_slow_xorb_host_leaves_most_of_the_file_to_a_fast_bridge(xm: Mirror, repo: GeneratedRepo,
                                                                   tmp_path: Path) -> None:
    # Both capped per connection, the bridge's six times faster: the plain
    # side must get more than its one first connection to carry most.
    xm.faults.bandwidth(2_000_000, predicate=kind("xorb")).bandwidth(12_000_000, predicate=kind("resolve"))
    pull_verified(xm, repo, tmp_path)
    bridge, xorb = sent(xm, "resolve"), sent(xm, "xorb")
    size = lfs_bytes(repo)
    assert bridge > size / 2, (bridge, xorb, size)
    assert xorb > 0, "both kinds ran"
    assert bridge + xorb < 1.1 * size, (bridge, xorb, size)  # each byte fetched about once


def test_xorb_ranges_under_way_on_a_crawling_xorb_host_are_overtaken_by_the_bridge(
        xm: Mirror, repo: GeneratedRepo, tmp_path: Path) -> None:
    """Before the first judgement Xet claims its pieces (4 MiB each); at
    100 KB/s a connection, each would take most of a minute. Once the bridge is
    judged faster and has nothing else to fetch, it fetches their bytes too:
    the pull ends in seconds, verified, instead of waiting for them."""
    xm.faults.bandwidth(100_000, predicate=kind("xorb"))
    t0 = time.monotonic()
    pull_verified(xm, repo, tmp_path)
    took = time.monotonic() - t0
    xorb_ranges = [r for r in xm.faults.of_kind("xorb") if r.method == "GET"]
    assert xorb_ranges, "Xet had ranges under way"
    # (a 4 MiB range alone takes 42 s at this rate: waiting for one is unmistakable)
    assert took < 20, (took, sent(xm, "resolve"), sent(xm, "xorb"))


def test_a_slow_bridge_leaves_most_of_the_file_to_fast_xorbs(xm: Mirror, repo: GeneratedRepo,
                                                             tmp_path: Path) -> None:
    xm.faults.bandwidth(SLOW, predicate=kind("resolve"))
    result = pull_verified(xm, repo, tmp_path)
    bridge, xorb = sent(xm, "resolve"), sent(xm, "xorb")
    size = lfs_bytes(repo)
    assert xorb > size / 2, (bridge, xorb, size)
    # The slow side keeps one connection (to keep measuring): it brings
    # little (with 7 of the 8 connections, as a fixed split gave it, 28%).
    assert 0 < bridge < 0.1 * size, (bridge, xorb, size)
    assert bridge + xorb < 1.1 * size, (bridge, xorb, size)
    assert result["transfer"]["xet_bytes"] == xorb  # type: ignore[index]


def test_a_bridge_that_refuses_mid_pull_leaves_the_rest_to_xet_keeping_its_bytes(
        xm: Mirror, repo: GeneratedRepo, tmp_path: Path) -> None:
    """The bridge serves its first ranges, then refuses (403 from then on):
    what it brought stays on disk, Xet fetches only the rest."""
    xm.faults.bandwidth(4 * SLOW, predicate=kind("xorb"))  # (so that the bridge has brought some bytes by then)
    pending = {"n": 0}

    def after_two(info: object) -> bool:
        if getattr(info, "route_kind", "") != "resolve" or getattr(info, "method", "") != "GET":
            return False
        pending["n"] += 1
        return pending["n"] > 3

    xm.faults.fail(403, times=None, predicate=after_two)
    pull_verified(xm, repo, tmp_path)
    bridge, xorb = sent(xm, "resolve"), sent(xm, "xorb")
    size = lfs_bytes(repo)
    assert bridge > 0 and 403 in [r.status for r in xm.faults.of_kind("resolve")]
    assert bridge + xorb < 1.1 * size, (bridge, xorb, size)


def test_a_recipe_that_knows_some_chunk_lengths_is_completed_by_chunking_only_the_others(
        tmp_path: Path) -> None:
    """A file that came partly as plain ranges keeps the chunk lengths its
    xorbs gave; a later pull chunks only the unknown chunks' bytes (chunking
    a whole blob costs some 6 CPU s per GB) and gets the whole file's."""
    from qwenhome.store.recipes import _complete, chunk_file
    from qwenhome.xet.recipe import FileRecipe
    from qwenhome.xet.reconstruction import ChunkRange, Term

    blob = tmp_path / "blob"
    blob.write_bytes(random_bytes(3 * MiB + 77, 11))
    lengths = chunk_file(blob)
    terms, some = [], []
    for k, i in enumerate(range(0, len(lengths), 7)):
        ls = lengths[i:i + 7]
        terms.append(Term(f"{k:064x}", ChunkRange(0, len(ls)), sum(ls)))
        # Unknown: runs inside a term, at its start, at its end, a whole term.
        some.append(tuple(0 if (k % 4 == 3 or (k % 4 == 0 and 2 <= j < 5) or (k % 4 == 1 and j < 2)
                                or (k % 4 == 2 and j >= 5)) else n for j, n in enumerate(ls)))
    recipe = FileRecipe("ab" * 32, blob.stat().st_size, tuple(terms), some_lengths=tuple(some))
    assert FileRecipe.from_json(recipe.dumps()) == recipe
    assert _complete(blob, recipe) == lengths
