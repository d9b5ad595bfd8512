"""A fleet's cache: nginx (``docs/nginx-mirror.conf``: ``proxy_cache`` + ``slice 8m``)
in front of the mirror. Stock huggingface_hub and qwenhome download verified
files through it, and a second download comes from nginx's cache: the mirror's
request log shows no second transfer of the file bytes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import huggingface_hub as hf
import pytest

from qwenhome.mirror import FolderBackend, HashCache
from qwenhome.pull import pull
from qwenhome.store import RepoRef
from tests.support.http import request
from tests.support.mirror import Mirror, pull_through_settings, start_mirror, start_pull_through
from tests.support.nginx import CachingProxy, find_nginx
from tests.support.repos import GeneratedRepo, MiB, make_repo, sha256_file

pytestmark = pytest.mark.skipif(
    find_nginx() is None,
    reason="nginx is not installed (Debian: apt-get install nginx-light; scripts/system-deps.sh does it)")

WEIGHTS = "model.safetensors"


@pytest.fixture(scope="module")
def sliced_repo(tmp_path_factory: pytest.TempPathFactory) -> GeneratedRepo:
    """Three 8 MiB slices and a bit: ranges cross slice boundaries."""
    return make_repo(tmp_path_factory.mktemp("nginx-repos"), "Org/Sliced", {
        WEIGHTS: 20 * MiB + 123, "config.json": b'{"model_type": "qwen2"}\n', "tokenizer.json": 200_000,
    }, seed=11)


@pytest.fixture
def proxied(sliced_repo: GeneratedRepo, tmp_path: Path) -> Iterator[tuple[Mirror, CachingProxy]]:
    with start_mirror(FolderBackend(sliced_repo.root, hashes=HashCache())) as mirror, \
            CachingProxy(mirror.url, tmp_path / "nginx") as proxy:
        yield mirror, proxy


def _check(folder: Path, repo: GeneratedRepo) -> None:
    for rel, f in repo.files.items():
        assert sha256_file(folder / rel) == f.sha256, rel


def test_stock_client_and_qwenhome_download_through_nginx_second_time_from_its_cache(
        proxied: tuple[Mirror, CachingProxy], sliced_repo: GeneratedRepo, tmp_path: Path) -> None:
    mirror, proxy = proxied
    size = sliced_repo.files[WEIGHTS].size

    # The Hub headers survive the proxy (huggingface_hub needs them on HEAD).
    head = request(proxy.url, "HEAD", f"/Org/Sliced/resolve/main/{WEIGHTS}")
    assert head.status == 200, proxy.error_log()
    assert head.headers["x-linked-etag"] == f'"{sliced_repo.files[WEIGHTS].sha256}"'
    assert head.headers["x-linked-size"] == head.headers["content-length"] == str(size)
    assert head.headers["x-repo-commit"] and head.headers["etag"]

    first = Path(hf.snapshot_download("Org/Sliced", cache_dir=tmp_path / "hf1", endpoint=proxy.url, token=False))
    _check(first, sliced_repo)
    from_mirror = mirror.faults.bytes_sent(WEIGHTS)
    # Slice by slice, each fetched once (the HEAD above used the `main` URL, a separate cache entry).
    assert size <= from_mirror <= size + 8 * MiB

    second = Path(hf.snapshot_download("Org/Sliced", cache_dir=tmp_path / "hf2", endpoint=proxy.url, token=False))
    _check(second, sliced_repo)
    # qwenhome: parallel ranges that do not line up with nginx's slices, plus If-Range.
    result = pull(pull_through_settings(tmp_path / "home", proxy.url), RepoRef.parse("Org/Sliced"))
    _check(result.snapshot, sliced_repo)
    assert mirror.faults.bytes_sent(WEIGHTS) == from_mirror, "a second download reached the mirror"
    hits = [line for line in proxy.access_log() if WEIGHTS in line and " HIT " in line]
    assert hits, proxy.access_log()


def test_nginx_in_front_of_a_pull_through_mirror_fetches_each_file_once_from_upstream(
        sliced_repo: GeneratedRepo, tmp_path: Path) -> None:
    """The fleet layout for the Hub: clients -> nginx -> mirror --pull-through -> sources."""
    with start_mirror(FolderBackend(sliced_repo.root, hashes=HashCache())) as upstream:
        mirror, _ = start_pull_through(pull_through_settings(tmp_path / "mirror-home", upstream.url))
        with mirror, CachingProxy(mirror.url, tmp_path / "nginx") as proxy:
            for n in (1, 2):
                got = Path(hf.snapshot_download("Org/Sliced", cache_dir=tmp_path / f"hf{n}", endpoint=proxy.url,
                                                token=False))
                _check(got, sliced_repo)
            assert upstream.faults.bytes_sent(WEIGHTS) == sliced_repo.files[WEIGHTS].size
            assert mirror.faults.bytes_sent(WEIGHTS) <= sliced_repo.files[WEIGHTS].size + 8 * MiB
