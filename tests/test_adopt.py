"""``qwenhome adopt``: models already on disk come into the home by hard link
(copy across filesystems), verified, and are never downloaded again."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import huggingface_hub as hf
import pytest

from qwenhome.config import load_settings
from qwenhome.mirror import HashCache
from qwenhome.pull import pull
from qwenhome.store import RepoRef, Store
from qwenhome.store.adopt import adopt, discover
from qwenhome.store.verify import verify_repo
from tests.conftest import RunCli
from tests.support.mirror import Mirror
from tests.support.modelscope_server import ModelScopeServer
from tests.support.repos import GeneratedRepo, MiB, write_file


def file_bytes(mirror: Mirror, repo: GeneratedRepo) -> int:
    return sum(mirror.faults.bytes_sent(rel) for rel in repo.files)


@pytest.fixture
def hf_cache(tmp_path: Path, mirror: Mirror, small_repo: GeneratedRepo) -> Path:
    """Another cache, made by stock huggingface_hub from the mirror."""
    cache = tmp_path / "other-hf-cache"
    hf.snapshot_download("Org/Small", cache_dir=cache, endpoint=mirror.url, token=False)
    return cache


def test_adopt_hf_cache_links_blobs_and_nothing_is_downloaded_again(
        run_cli: RunCli, qwen_home: Path, hf_cache: Path, mirror: Mirror, small_repo: GeneratedRepo) -> None:
    before = file_bytes(mirror, small_repo)
    res = run_cli(["adopt", str(hf_cache), "--json"])
    assert res.returncode == 0, res.stderr
    [rep] = json.loads(res.stdout)["adopted"]
    blobs = {f.etag for f in small_repo.files.values()}
    assert (rep["repo"], rep["kind"], rep["linked"], rep["copied"]) == ("Org/Small", "hf-cache", len(blobs), 0)
    assert rep["refs"] == ["main"]
    theirs = hf_cache / "models--Org--Small"
    ours = qwen_home / "hub" / "models--Org--Small"
    for etag in blobs:  # hard links: same inode, no extra disk
        assert (ours / "blobs" / etag).stat().st_ino == (theirs / "blobs" / etag).stat().st_ino
    commit = (theirs / "refs" / "main").read_text()
    res = run_cli(["path", "Org/Small"])
    assert res.stdout.strip() == str(ours / "snapshots" / commit)
    store = Store(qwen_home / "hub", qwen_home / "qwenhome")
    assert verify_repo(store, RepoRef.parse("Org/Small")).ok
    # Online again: the pull finds every blob in the home and downloads no file byte.
    res = run_cli(["pull", "Org/Small", "--json"], endpoint=mirror.url)
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout.strip().splitlines()[-1])
    assert result["downloaded_bytes"] == 0 and result["commit"] == commit
    assert file_bytes(mirror, small_repo) == before, "no file bytes served after adopt"


def test_adopt_save_pretrained_folder_under_a_name(tmp_path: Path, qwen_home: Path) -> None:
    folder = tmp_path / "my-finetune"
    big = write_file(folder / "model.safetensors", 3 * MiB + 1, seed=5, relpath="model.safetensors")
    write_file(folder / "config.json", b'{"model_type": "qwen2"}\n')
    write_file(folder / "tokenizer.json", 5000, seed=5, relpath="tokenizer.json")
    store = Store(qwen_home / "hub", qwen_home / "qwenhome")
    [found] = discover([folder], as_repo="Me/Tuned")
    rep = adopt(store, found)
    assert rep.ok and (rep.linked, rep.copied) == (1, 2), "big files linked, small ones copied"
    snap = store.snapshot_path(RepoRef.parse("Me/Tuned"))
    assert snap.name == rep.commit
    assert (snap / "model.safetensors").stat().st_ino == (folder / "model.safetensors").stat().st_ino
    assert os.path.basename(os.readlink(snap / "model.safetensors")) == big.sha256
    assert (snap / "config.json").read_bytes() == (folder / "config.json").read_bytes()
    # Deterministic: adopting the same content again changes nothing.
    again = adopt(store, discover([folder], as_repo="Me/Tuned")[0])
    assert again.commit == rep.commit and again.present == 3
    # Without --as the folder name is used.
    [plain] = discover([folder])
    assert str(plain.ref) == "local/my-finetune"


def test_plain_copy_of_a_repo_is_never_downloaded_again_by_a_hub_pull(
        tmp_path: Path, qwen_home: Path, mirror: Mirror, small_repo: GeneratedRepo) -> None:
    folder = tmp_path / "copied-by-hand"
    shutil.copytree(small_repo.path, folder)
    store = Store(qwen_home / "hub", qwen_home / "qwenhome")
    assert adopt(store, discover([folder], as_repo="Org/Small")[0]).ok
    before = file_bytes(mirror, small_repo)
    settings = load_settings({"HOME": str(tmp_path)}, home=str(qwen_home), sources=[mirror.url])
    result = pull(settings, RepoRef.parse("Org/Small"))
    assert result.downloaded_bytes == 0, "small files are found by git oid, large ones by sha256"
    assert file_bytes(mirror, small_repo) == before


def test_adopt_local_dir_download_keeps_the_hub_commit(
        tmp_path: Path, qwen_home: Path, mirror: Mirror, small_repo: GeneratedRepo) -> None:
    local = tmp_path / "local-dir"
    hf.snapshot_download("Org/Small", local_dir=local, endpoint=mirror.url, token=False)
    before = file_bytes(mirror, small_repo)
    store = Store(qwen_home / "hub", qwen_home / "qwenhome")
    [found] = discover([local], as_repo="Org/Small")
    rep = adopt(store, found)
    assert rep.ok, rep.problems
    settings = load_settings({"HOME": str(tmp_path)}, home=str(qwen_home), sources=[mirror.url])
    result = pull(settings, RepoRef.parse("Org/Small"))
    assert result.commit == rep.commit, "the commit recorded by local_dir is kept"
    assert result.downloaded_bytes == 0 and file_bytes(mirror, small_repo) == before


@pytest.mark.parametrize("layout", ["models/Org--Small/snapshots/master", "hub/Org/Small"])
def test_adopt_modelscope_cache_matches_a_modelscope_pull(
        layout: str, tmp_path: Path, qwen_home: Path, small_repo: GeneratedRepo, repos_root: Path,
        hash_cache: HashCache) -> None:
    ms_cache = tmp_path / "modelscope-cache"
    shutil.copytree(small_repo.path, ms_cache / layout)
    store = Store(qwen_home / "hub", qwen_home / "qwenhome")
    [found] = discover([ms_cache])
    assert (str(found.ref), found.kind) == ("Org/Small", "modelscope")
    rep = adopt(store, found)
    assert rep.ok and rep.linked == len(small_repo.files)
    with ModelScopeServer(repos_root, hashes=hash_cache) as ms:
        settings = load_settings({"HOME": str(tmp_path)}, home=str(qwen_home), sources=[f"modelscope:{ms.url}"])
        result = pull(settings, RepoRef.parse("Org/Small"))
        assert result.commit == rep.commit, "same content, same snapshot id as a ModelScope pull"
        assert result.downloaded_bytes == 0 and ms.bytes_sent() == 0


def test_corrupt_blob_in_the_other_cache_is_refused(hf_cache: Path, qwen_home: Path,
                                                    small_repo: GeneratedRepo) -> None:
    exp = small_repo.files["model.safetensors"]
    blob = hf_cache / "models--Org--Small" / "blobs" / exp.etag
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.unlink()
    blob.write_bytes(bytes(data))
    store = Store(qwen_home / "hub", qwen_home / "qwenhome")
    [found] = discover([hf_cache])
    rep = adopt(store, found)
    assert not rep.ok and "does not match" in rep.problems[0]
    assert not store.has_blob(RepoRef.parse("Org/Small"), exp.etag)
    assert not list(store.repo_dir(RepoRef.parse("Org/Small")).glob("blobs/.adopt-*")), "no temp file left"


def test_no_verify_trusts_names_and_verify_finds_the_lie_later(hf_cache: Path, qwen_home: Path,
                                                               small_repo: GeneratedRepo) -> None:
    exp = small_repo.files["model.safetensors"]
    blob = hf_cache / "models--Org--Small" / "blobs" / exp.etag
    data = bytearray(blob.read_bytes())
    data[7] ^= 0xFF
    blob.unlink()
    blob.write_bytes(bytes(data))
    store = Store(qwen_home / "hub", qwen_home / "qwenhome")
    rep = adopt(store, discover([hf_cache])[0], verify=False)
    assert rep.ok and not rep.verified
    report = verify_repo(store, RepoRef.parse("Org/Small"))
    assert [b.blob for b in report.bad] == [exp.etag]


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs a second filesystem")
def test_adopt_across_filesystems_copies(hf_cache: Path, qwen_home: Path, tmp_path: Path) -> None:
    other = Path("/dev/shm") / f"qwenhome-adopt-{os.getpid()}-{tmp_path.name}"
    shutil.copytree(hf_cache, other, symlinks=True)
    try:
        if os.stat(other).st_dev == os.stat(qwen_home).st_dev:
            pytest.skip("/dev/shm is on the same filesystem here")
        store = Store(qwen_home / "hub", qwen_home / "qwenhome")
        rep = adopt(store, discover([other])[0])
        assert rep.ok and rep.linked == 0 and rep.copied > 0
        assert verify_repo(store, RepoRef.parse("Org/Small")).ok
    finally:
        shutil.rmtree(other, ignore_errors=True)


def test_adopt_dry_run_and_other_home(run_cli: RunCli, hf_cache: Path, tmp_path: Path) -> None:
    other_home = tmp_path / "other-home"
    shutil.copytree(hf_cache, other_home / "hub", symlinks=True)
    res = run_cli(["adopt", str(other_home), "--dry-run", "--json"])
    assert res.returncode == 0, res.stderr
    [f] = json.loads(res.stdout)["found"]
    assert f["repo"] == "Org/Small" and f["kind"] == "hf-cache" and f["files"] == 6
