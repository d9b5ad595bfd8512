"""``qwenhome adopt`` reads only what it was pointed at: links leaving the
adopted folder (or, in a hub cache, not pointing into that repository's own
blobs) are left out and named, linked snapshot folders are not listed, and a
copied blob is never more readable than its source."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from qwenhome.store import RepoRef, Store
from qwenhome.store.adopt import adopt, discover
from tests.conftest import RunCli
from tests.support.repos import GeneratedRepo, MiB, make_store_repo, write_file

SECRET = b"secret of another user: only its owner may read this\n"


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A private file outside anything adopted."""
    path = tmp_path / "private" / "secret.txt"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    path.chmod(0o600)
    return path


def blobs_with(home: Path, data: bytes) -> list[Path]:
    return [b for b in (home / "hub").glob("*/blobs/*") if b.is_file() and b.read_bytes() == data]


def test_links_out_of_a_plain_folder_are_left_out_and_named(
        run_cli: RunCli, qwen_home: Path, tmp_path: Path, secret: Path) -> None:
    folder = tmp_path / "model"
    write_file(folder / "config.json", b'{"model_type": "qwen2"}\n')
    write_file(folder / "model.safetensors", 2 * MiB, seed=4, relpath="model.safetensors")
    (folder / "stolen.txt").symlink_to(secret)
    (folder / "passwd").symlink_to("/etc/passwd")
    (folder / "outdir").symlink_to(secret.parent, target_is_directory=True)
    (folder / "same-config.json").symlink_to("config.json")  # a link inside the folder is fine
    res = run_cli(["adopt", str(folder), "--as", "Me/Model", "--json"])
    assert res.returncode == 0, res.stderr
    [rep] = json.loads(res.stdout)["adopted"]
    skipped = "\n".join(rep["skipped"])
    for name in ("stolen.txt", "passwd", "outdir"):
        assert str(folder / name) in skipped and f"warning: {folder / name}" in res.stderr
    snap = Path(run_cli(["path", "Me/Model"]).stdout.strip())
    assert sorted(p.name for p in snap.iterdir()) == ["config.json", "model.safetensors", "same-config.json"]
    assert blobs_with(qwen_home, SECRET) == []
    assert blobs_with(qwen_home, Path("/etc/passwd").read_bytes()) == []


def test_hub_cache_links_must_point_into_their_own_blobs(
        run_cli: RunCli, qwen_home: Path, tmp_path: Path, secret: Path, small_repo: GeneratedRepo) -> None:
    cache = tmp_path / "other-cache"
    snap = make_store_repo(cache, small_repo, commit="d" * 40)
    repo_dir = snap.parent.parent
    (snap / "config.json").unlink()
    (snap / "config.json").symlink_to(os.path.relpath(secret, snap))
    (snap / "passwd").symlink_to("/etc/passwd")
    # A snapshot folder that is itself a link out is not even listed.
    (repo_dir / "snapshots" / ("e" * 40)).symlink_to("/etc", target_is_directory=True)
    res = run_cli(["adopt", str(cache), "--dry-run", "--json"])
    assert res.returncode == 0, res.stderr
    [found] = json.loads(res.stdout)["found"]
    assert found["commit"] == "d" * 40 and found["files"] == len(small_repo.files) - 1
    assert sorted(Path(s.split(":")[0]).name for s in found["skipped"]) == ["config.json", "passwd"]
    res = run_cli(["adopt", str(cache), "--json"])
    assert res.returncode == 0, res.stderr
    [rep] = json.loads(res.stdout)["adopted"]
    assert rep["linked"] + rep["present"] == len({f.etag for p, f in small_repo.files.items() if p != "config.json"})
    assert not (qwen_home / "hub" / "models--Org--Small" / "snapshots" / ("e" * 40)).exists()
    assert blobs_with(qwen_home, SECRET) == []
    assert blobs_with(qwen_home, Path("/etc/passwd").read_bytes()) == []


def test_a_linked_blobs_folder_is_not_trusted(qwen_home: Path, tmp_path: Path, secret: Path) -> None:
    repo_dir = tmp_path / "cache" / "models--Org--Evil"
    snap = repo_dir / "snapshots" / ("f" * 40)
    snap.mkdir(parents=True)
    (repo_dir / "blobs").symlink_to(secret.parent, target_is_directory=True)
    (snap / "config.json").symlink_to("../../blobs/secret.txt")
    [found] = discover([tmp_path / "cache"])
    assert found.files == [] and "config.json" in found.skipped[0]
    rep = adopt(Store(qwen_home / "hub", qwen_home / "qwenhome"), found)
    assert rep.skipped == found.skipped
    assert blobs_with(qwen_home, SECRET) == []


def test_a_copied_blob_is_never_more_readable_than_its_source(qwen_home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "private-model"
    write_file(folder / "config.json", b'{"private": true}\n')
    write_file(folder / "tokenizer.json", 5000, seed=6, relpath="tokenizer.json")
    (folder / "config.json").chmod(0o600)
    (folder / "tokenizer.json").chmod(0o640)
    store = Store(qwen_home / "hub", qwen_home / "qwenhome")
    rep = adopt(store, discover([folder], as_repo="Me/Private")[0])
    assert rep.ok and rep.copied == 2, "small files of a folder are copied"
    snap = store.snapshot_path(RepoRef.parse("Me/Private"))
    for name, mode in (("config.json", 0o600), ("tokenizer.json", 0o640)):
        blob_mode = stat.S_IMODE((snap / name).stat().st_mode)
        assert blob_mode & ~mode == 0, f"{name}: blob {oct(blob_mode)} is more readable than its source {oct(mode)}"
