"""Pull-through between two Xet mirrors: stock hf_xet asks the front for a file the front
lacks; the front fetches it from its upstream through Xet, verifies it, and then answers
the client's reconstruction, from a record built on the chunk boundaries its pull kept.

Both mirrors run on 127.0.0.1 with request logs; hf_xet runs in a subprocess with
throw-away HOME/HF_HOME (``hf_download``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from qwenhome.mirror import FolderBackend, XetOptions
from qwenhome.store import RepoRef, Store
from tests.support.http import request
from tests.support.mirror import pull_through_settings, start_pull_through
from tests.support.repos import GeneratedRepo, make_repo, sha256_file
from tests.support.xet_mirror import hf_download, random_bytes, start_xet_mirror

MiB = 1 << 20
WEIGHTS = "model.safetensors"


@pytest.fixture(scope="module")
def xet_repo(tmp_path_factory: pytest.TempPathFactory) -> GeneratedRepo:
    return make_repo(tmp_path_factory.mktemp("pt-xet-repos"), "Org/PtXet", {
        WEIGHTS: random_bytes(6 * MiB + 77, 31),
        "config.json": b'{"model_type": "qwen2"}\n',
    })


def test_a_file_the_front_lacks_comes_through_xet_upstream_then_through_xet_to_the_client(
        xet_repo: GeneratedRepo, tmp_path: Path) -> None:
    expected = xet_repo.files[WEIGHTS]
    with start_xet_mirror(FolderBackend(xet_repo.root), tmp_path / "up-xet") as upstream:
        upstream_id = request(upstream.url, "HEAD", f"/Org/PtXet/resolve/main/{WEIGHTS}").header("X-Xet-Hash")
        assert upstream_id
        # The upstream's bridge refuses bodies (as the Hub's does very large
        # files): every byte comes through Xet, whose chunk headers give the
        # record its boundaries. (Otherwise the bridge takes a share: see
        # tests/test_xet_mix.py.)
        upstream.faults.fail(403, times=None, predicate=lambda info: info.route_kind == "resolve"
                             and info.method == "GET" and info.file_path == WEIGHTS)
        home = tmp_path / "home"
        home.mkdir()
        front, backend = start_pull_through(pull_through_settings(home, upstream.url),
                                            xet=XetOptions(folder=home / "qwenhome" / "xet"))
        with front:
            xet = front.server.xet
            assert xet is not None
            [got] = hf_download(front.url, "Org/PtXet", tmp_path / "client", files=[WEIGHTS])
            assert sha256_file(got) == expected.sha256
            up_log, front_log = upstream.faults.records(), front.faults.records()
            # The front never had the file's bytes before: one upstream transfer, through Xet.
            assert backend.upstream_transfers == 1
            assert not [r for r in up_log if r.route_kind == "resolve" and r.method == "GET" and r.status < 300]
            up_recons = [r.status for r in up_log if r.route_kind == "reconstruction"]
            assert up_recons and set(up_recons) == {200}
            up_xorbs = [r for r in up_log if r.route_kind == "xorb"]
            assert up_xorbs and all(r.status == 206 for r in up_xorbs)
            # (Until the bridge's refusal came, Xet claimed the file in 2 MiB
            # pieces, the size it claims of a file it shares: the chunk at
            # each piece's start is fetched by both pieces it straddles.)
            assert expected.size <= sum(r.bytes_sent for r in up_xorbs) < expected.size * 1.05 + 4096
            # The client came through the front's Xet routes, never a resolve body.
            assert not [r for r in front_log if r.route_kind == "resolve" and r.method == "GET"]
            assert [r.status for r in front_log if r.route_kind == "reconstruction"] == [200]
            front_xorbs = [r for r in front_log if r.route_kind == "xorb"]
            assert front_xorbs and all(r.status == 206 for r in front_xorbs)
            # The verified blob is in the front's store, and its Xet hash is the upstream's.
            blob = Store(home / "hub", home / "qwenhome").blob_path(RepoRef("Org/PtXet"), expected.etag)
            assert sha256_file(blob) == expected.sha256
            head = request(front.url, "HEAD", f"/Org/PtXet/resolve/main/{WEIGHTS}")
            assert head.header("X-Xet-Hash") == upstream_id
            # The record was built on the chunk boundaries the pull kept, not by chunking again.
            assert xet.builder.built == 1 and xet.builder.from_recipes == 1
