"""The ModelScope protocol client and ModelScope-only pulls, against the
ModelScope-protocol test server serving the same generated repositories."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from qwenhome.config import Source, load_settings
from qwenhome.errors import QwenhomeError, RepoNotFoundError, RevisionNotFoundError
from qwenhome.hub.modelscope import ModelScopeClient, listing_commit
from qwenhome.mirror import HashCache
from qwenhome.net import HttpClient
from qwenhome.pull import pull
from qwenhome.store import RepoRef, Store
from qwenhome.store.verify import verify_repo
from tests.support.modelscope_server import ModelScopeServer
from tests.support.repos import GeneratedRepo


@pytest.fixture
def ms(repos_root: Path, small_repo: GeneratedRepo, hash_cache: HashCache) -> Iterator[ModelScopeServer]:
    with ModelScopeServer(repos_root, hashes=hash_cache) as server:
        yield server


def client(url: str, token: str | None = None, limit: int = 3000) -> ModelScopeClient:
    return ModelScopeClient(Source("ms", "modelscope", url, token), HttpClient(), listing_limit=limit)


def test_listing_gives_every_file_with_size_and_sha256(ms: ModelScopeServer, small_repo: GeneratedRepo) -> None:
    files = client(ms.url).list_files(RepoRef.parse("Org/Small"))
    assert {f.path: (f.size, f.sha256) for f in files} == {
        p: (e.size, e.sha256) for p, e in small_repo.files.items()}
    [rec] = ms.records("files")
    assert rec.query == {"Revision": "master", "Recursive": "True"}


def test_cut_off_listing_is_walked_folder_by_folder(repos_root: Path, small_repo: GeneratedRepo,
                                                    hash_cache: HashCache) -> None:
    with ModelScopeServer(repos_root, hashes=hash_cache, listing_limit=7) as server:
        files = client(server.url, limit=7).list_files(RepoRef.parse("Org/Small"))
        roots = sorted(r.query.get("Root", "") for r in server.records("files"))
    assert sorted(f.path for f in files) == sorted(small_repo.files)
    assert roots == ["", "", "sub", "sub/dir"], "one cut-off recursive listing, then one per folder"


def test_unknown_repo_and_revision_have_codes(ms: ModelScopeServer) -> None:
    with pytest.raises(RepoNotFoundError) as repo:
        client(ms.url).list_files(RepoRef.parse("Org/Nope"))
    assert repo.value.code == "repo-not-found" and repo.value.exit_code == 3
    with pytest.raises(RevisionNotFoundError) as rev:
        client(ms.url).list_files(RepoRef.parse("Org/Small"), "v9")
    assert rev.value.code == "revision-not-found" and rev.value.exit_code == 3


def test_a_folder_cut_off_even_when_listed_alone_is_listing_truncated(
        repos_root: Path, small_repo: GeneratedRepo, hash_cache: HashCache) -> None:
    """The top folder holds more entries than the server lists: walking folder by
    folder cannot help, and a partial listing would be a partial snapshot."""
    with ModelScopeServer(repos_root, hashes=hash_cache, listing_limit=3) as server:
        with pytest.raises(QwenhomeError) as info:
            client(server.url, limit=3).list_files(RepoRef.parse("Org/Small"))
        roots = [r.query.get("Root", "") for r in server.records("files")]
    assert info.value.code == "listing-truncated" and "use a Hub source" in info.value.hint
    assert roots == ["", ""], "the cut-off recursive listing, then the top folder alone"


def test_a_dataset_is_not_asked_of_modelscope(ms: ModelScopeServer) -> None:
    with pytest.raises(QwenhomeError) as info:
        client(ms.url).list_files(RepoRef.parse("datasets/Org/Data"))
    assert info.value.code == "unsupported-repo-type" and "Hub source" in info.value.hint
    assert not ms.records(), "refused before any request"


def test_modelscope_only_pull_names_blobs_by_sha256_and_verifies(
        qwen_home: Path, ms: ModelScopeServer, small_repo: GeneratedRepo) -> None:
    settings = load_settings({"HOME": str(qwen_home.parent)}, home=str(qwen_home),
                             sources=[f"modelscope:{ms.url}"])
    result = pull(settings, RepoRef.parse("Org/Small"))
    assert len(ms.records("files")) == 1, "listed once per pull"
    files = client(ms.url).list_files(RepoRef.parse("Org/Small"))
    assert result.commit == listing_commit("Org/Small", "master", files), "deterministic snapshot id"
    assert result.source == "modelscope"
    store = Store(qwen_home / "hub", qwen_home / "qwenhome")
    for rel, exp in small_repo.files.items():
        link = result.snapshot / rel
        assert os.path.basename(os.readlink(link)) == exp.sha256
        assert link.read_bytes() == (small_repo.path / rel).read_bytes()
    assert ms.bytes_sent() == small_repo.total_size
    assert verify_repo(store, RepoRef.parse("Org/Small")).ok
    manifest = store.load_manifest(RepoRef.parse("Org/Small"), result.commit)
    assert manifest is not None and manifest.source == "modelscope"
    # Same content, same id: a second pull is a no-op.
    again = pull(settings, RepoRef.parse("Org/Small"))
    assert again.commit == result.commit and again.downloaded_bytes == 0


def test_modelscope_token_goes_only_to_modelscope(repos_root: Path, hash_cache: HashCache,
                                                  small_repo: GeneratedRepo, qwen_home: Path) -> None:
    with ModelScopeServer(repos_root, hashes=hash_cache, token="ms-secret") as server:
        with pytest.raises(QwenhomeError):
            client(server.url).list_files(RepoRef.parse("Org/Small"))
        assert client(server.url, token="ms-secret").list_files(RepoRef.parse("Org/Small"))
        assert all(r.has_auth_header for r in server.records()[1:])
    # An HF token is never attached to a ModelScope source.
    settings = load_settings({"HOME": str(qwen_home.parent), "HF_TOKEN": "hf_secret"}, home=str(qwen_home),
                             sources=["modelscope:http://127.0.0.1:9", "https://huggingface.co"])
    assert settings.sources[0].token is None and settings.sources[1].token == "hf_secret"
