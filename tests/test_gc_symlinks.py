"""``qwenhome gc`` and ``rm`` never follow a symbolic link out of the home:
a repository, its blobs folder, a snapshot, a blob, the partials or the
locks folder that is a link to an outside folder (or file) leaves what is
there untouched. Real homes, the real command in a subprocess."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.conftest import RunCli
from tests.support.cli import CliResult
from tests.support.repos import GeneratedRepo, make_store_repo

COMMIT = "c" * 40
OLD = time.time() - 30 * 86400


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside the home holding files gc would take for its own."""
    out = tmp_path / "outside"
    out.mkdir()
    for name in ("e" * 64, "keep.txt", "f" * 64 + ".part", "x.lock", ".adopt-0123456789ab.incomplete"):
        (out / name).write_bytes(b"not the home's")
        os.utime(out / name, (OLD, OLD))
    return out


def home_with(qwen_home: Path, small_repo: GeneratedRepo) -> Path:
    make_store_repo(qwen_home / "hub", small_repo, commit=COMMIT)
    return qwen_home / "hub" / "models--Org--Small"


def untouched(outside: Path) -> None:
    assert sorted(p.name for p in outside.iterdir()) == sorted(
        ["e" * 64, "keep.txt", "f" * 64 + ".part", "x.lock", ".adopt-0123456789ab.incomplete"])


def check(result: CliResult) -> None:
    rc, _, err = result
    assert "Traceback" not in err, err
    assert rc == 0 or err.strip().splitlines()[-1].startswith("error["), err


def test_gc_and_rm_do_not_follow_a_linked_blobs_folder(
        run_cli: RunCli, qwen_home: Path, small_repo: GeneratedRepo, outside: Path) -> None:
    repo = home_with(qwen_home, small_repo)
    for blob in (repo / "blobs").iterdir():
        os.replace(blob, outside / blob.name)
    (repo / "blobs").rmdir()
    (repo / "blobs").symlink_to(outside, target_is_directory=True)
    check(run_cli(["gc", "--partial-age", "0"], timeout=60))
    untouched_plus = {p.name for p in outside.iterdir()}
    assert {"e" * 64, "keep.txt", ".adopt-0123456789ab.incomplete"} <= untouched_plus
    check(run_cli(["rm", f"Org/Small@{COMMIT}"], timeout=60))
    assert {"e" * 64, "keep.txt", ".adopt-0123456789ab.incomplete"} <= {p.name for p in outside.iterdir()}
    check(run_cli(["rm", "Org/Small"], timeout=60))
    assert {"e" * 64, "keep.txt", ".adopt-0123456789ab.incomplete"} <= {p.name for p in outside.iterdir()}


def test_rm_of_a_linked_snapshot_or_repository_removes_the_link_only(
        run_cli: RunCli, qwen_home: Path, small_repo: GeneratedRepo, outside: Path) -> None:
    repo = home_with(qwen_home, small_repo)
    other = "d" * 40
    (repo / "snapshots" / other).symlink_to(outside, target_is_directory=True)
    (repo / "refs" / "other").write_text(other)
    check(run_cli(["rm", f"Org/Small@{other}"], timeout=60))
    untouched(outside)
    check(run_cli(["gc"], timeout=60))
    untouched(outside)
    linked = qwen_home / "hub" / "models--Org--Linked"
    linked.symlink_to(outside, target_is_directory=True)
    check(run_cli(["rm", "Org/Linked"], timeout=60))
    check(run_cli(["gc", "--partial-age", "0"], timeout=60))
    untouched(outside)


def test_gc_does_not_follow_linked_partials_or_locks_or_a_linked_blob(
        run_cli: RunCli, qwen_home: Path, small_repo: GeneratedRepo, outside: Path) -> None:
    repo = home_with(qwen_home, small_repo)
    state = qwen_home / "qwenhome"
    state.mkdir(exist_ok=True)
    (state / "partials").symlink_to(outside, target_is_directory=True)
    (state / "locks").symlink_to(outside, target_is_directory=True)
    (repo / "blobs" / ("a" * 64)).symlink_to(outside / "keep.txt")  # a blob no snapshot links to
    check(run_cli(["gc", "--partial-age", "0"], timeout=60))
    untouched(outside)
    assert (outside / "keep.txt").read_bytes() == b"not the home's"
