"""``qwenhome gc`` and ``qwenhome rm`` on a home that holds something:
what no snapshot references and what is stale goes; what is referenced,
fresh or in use stays."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from qwenhome.config import load_settings
from qwenhome.mirror import FolderBackend
from qwenhome.pull import pull
from qwenhome.store import RepoRef, Store
from qwenhome.store.cache import FileLock
from qwenhome.store.verify import verify_repo
from tests.conftest import RunCli
from tests.support.mirror import Mirror, start_mirror
from tests.support.repos import GeneratedRepo, MiB, make_repo, write_file

DAY = 86400.0


def aged(path: Path, data: bytes, days: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    then = time.time() - days * DAY
    os.utime(path, (then, then))
    return path


def test_gc_drops_unreferenced_and_stale_and_keeps_the_rest(
        run_cli: RunCli, qwen_home: Path, mirror: Mirror, small_repo: GeneratedRepo) -> None:
    assert run_cli(["pull", "Org/Small"], endpoint=mirror.url).returncode == 0
    blobs = qwen_home / "hub" / "models--Org--Small" / "blobs"
    state = qwen_home / "qwenhome"
    referenced = sorted(p.name for p in blobs.iterdir())
    orphan = aged(blobs / ("e" * 64), b"no snapshot links to me", 0)
    old_tmp = aged(blobs / ".adopt-0123456789ab.incomplete", b"x" * 1000, 3)
    young_tmp = aged(blobs / ".import-0123456789ab.incomplete", b"y" * 1000, 0)
    old_part = aged(state / "partials" / f"{'1' * 64}.part", b"z" * 5000, 3)
    old_map = aged(state / "partials" / f"{'1' * 64}.part.json", b"{}", 3)
    young_part = aged(state / "partials" / f"{'2' * 64}.part", b"w" * 5000, 0.5)
    stale_lock = aged(state / "locks" / f"{'3' * 64}.lock", b"", 0)
    held = FileLock(state / "locks" / f"{'4' * 64}.lock")
    assert held.acquire()  # another pull at work on that blob
    try:
        res = run_cli(["gc", "--partial-age", "1", "--json"])
    finally:
        held.release()
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    gone = {orphan, old_tmp, old_part, old_map, stale_lock}
    assert sorted(report["removed"]) == sorted(
        f"{p.parent.parent.name}/{p.parent.name}/{p.name}" if p.parent == blobs else f"{p.parent.name}/{p.name}"
        for p in gone)
    assert report["freed"] >= len(b"no snapshot links to me") + 1000 + 5000
    assert not any(p.exists() for p in gone)
    assert young_tmp.exists() and young_part.exists()
    assert sorted(p.name for p in blobs.iterdir() if not p.name.startswith(".")) == referenced
    store = Store(qwen_home / "hub", state)
    assert verify_repo(store, RepoRef.parse("Org/Small")).ok
    store.snapshot_path(RepoRef.parse("Org/Small"))
    # Age 0: every partial goes, and the in-flight temporary file in blobs/ too.
    report = json.loads(run_cli(["gc", "--partial-age", "0", "--json"]).stdout)
    assert sorted(report["removed"]) == sorted([f"partials/{young_part.name}",
                                                f"models--Org--Small/blobs/{young_tmp.name}"])


def test_rm_one_revision_keeps_the_blobs_the_other_shares(
        run_cli: RunCli, qwen_home: Path, tmp_path: Path) -> None:
    root = tmp_path / "repos"
    repo = make_repo(root, "Org/Two", {"config.json": b'{"v": 1}\n', "model.safetensors": 2 * MiB,
                                       "tokenizer.json": 20_000}, seed=11)
    with start_mirror(FolderBackend(root, ttl=0.0)) as m:
        settings = load_settings({"HOME": str(tmp_path)}, home=str(qwen_home), sources=[m.url])
        first = pull(settings, RepoRef.parse("Org/Two")).commit
        changed = write_file(repo.path / "config.json", b'{"v": 2}\n', relpath="config.json")
        second = pull(settings, RepoRef.parse("Org/Two")).commit
    assert first != second
    store = Store(qwen_home / "hub", qwen_home / "qwenhome")
    ref = RepoRef.parse("Org/Two")
    old_config = repo.files["config.json"].etag
    res = run_cli(["rm", f"Org/Two@{first}", "--json"])
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["removed"] == [f"Org/Two@{first}"] and report["freed"] == len(b'{"v": 1}\n')
    assert not store.snapshot_dir(ref, first).exists()
    assert not store.has_blob(ref, old_config), "the blob only the removed revision used is gone"
    for name in ("model.safetensors", "tokenizer.json"):
        assert store.has_blob(ref, repo.files[name].etag), f"{name}: shared with the other revision, kept"
    assert store.has_blob(ref, changed.git_oid)
    snap = store.snapshot_path(ref.at(second))
    assert store.read_ref(ref, "main") == second and snap == store.snapshot_path(ref)
    assert (snap / "config.json").read_bytes() == b'{"v": 2}\n'
    assert verify_repo(store, ref).ok
    assert run_cli(["path", f"Org/Two@{first}"]).returncode == 3, "the removed revision is not in the home"
