"""A home that runs out of inodes (a real tmpfs mounted with ``nr_inodes``):
wherever the last inode goes (a folder, the manifest, a lock file, a partial,
a blob, a snapshot link, a ref), the pull ends in ``error[disk-full]`` (exit
7), never a traceback, and resumes once there is room. Lock files do not
stay behind, one per blob, after a pull."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from qwenhome.errors import EXIT_DISK
from qwenhome.mirror import FolderBackend
from qwenhome.store import RepoRef, Store
from qwenhome.store.verify import verify_repo
from tests.support.cli import run_cli
from tests.support.mirror import Mirror, start_mirror
from tests.support.mounts import remount, tmpfs
from tests.support.repos import MiB, make_repo

FILES = 24


@pytest.fixture
def many_files(tmp_path: Path) -> Iterator[Mirror]:
    """``Org/Many``: small files in folders and one LFS file, served by a mirror."""
    files: dict[str, int | bytes] = {f"part{i // 8}/file{i}.txt": 100 + i for i in range(FILES)}
    files["model.safetensors"] = 2 * MiB
    make_repo(tmp_path / "repos", "Org/Many", files, seed=9)
    with start_mirror(FolderBackend(tmp_path / "repos")) as m:
        yield m


def test_running_out_of_inodes_anywhere_is_disk_full_and_resumes(tmp_path: Path, many_files: Mirror) -> None:
    home = tmp_path / "home"
    outcomes: dict[int, int] = {}
    with tmpfs(home, "size=64m,nr_inodes=4"):
        # Each run starts from what the runs before left: the last inode goes
        # somewhere else each time, until the pull completes.
        for n in range(4, 200, 9):
            remount(home, f"nr_inodes={n}")
            res = run_cli(["pull", "Org/Many"], home=home, endpoint=many_files.url)
            assert "Traceback" not in res.stderr, f"nr_inodes={n}: {res.stderr}"
            outcomes[n] = res.returncode
            if res.returncode == 0:
                break
            assert res.returncode == EXIT_DISK, f"nr_inodes={n}: {res.stderr}"
            [line] = res.stderr.strip().splitlines()[-1:]
            assert line.startswith("error[disk-full]: ") and "(hint: " in line, line
        assert list(outcomes.values()).count(EXIT_DISK) >= 5, outcomes
        assert list(outcomes.values())[-1] == 0, f"the pull never completed: {outcomes}"
        store = Store(home / "hub", home / "qwenhome")
        assert verify_repo(store, RepoRef.parse("Org/Many")).ok
        store.snapshot_path(RepoRef.parse("Org/Many"))


def test_a_pull_leaves_no_lock_file_behind(tmp_path: Path, many_files: Mirror) -> None:
    home = tmp_path / "home"
    res = run_cli(["pull", "Org/Many", "--json"], home=home, endpoint=many_files.url)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1])["files"] == FILES + 1
    locks = home / "qwenhome" / "locks"
    assert not locks.exists() or sorted(p.name for p in locks.iterdir()) == []
