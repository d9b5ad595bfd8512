"""A home on a read-only filesystem (a real tmpfs remounted ``ro``: root
ignores file modes, so chmod would prove nothing here). What only reads
works, a pull of a complete model included; everything that must write ends
in ``error[home-read-only]`` (exit 7) with a hint, never a traceback."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from qwenhome.errors import EXIT_DISK
from tests.conftest import RunCli
from tests.support.cli import CliResult
from tests.support.mirror import Mirror
from tests.support.mounts import remount, tmpfs
from tests.support.repos import write_file


@pytest.fixture
def home_fs(qwen_home: Path) -> Iterator[Path]:
    with tmpfs(qwen_home) as home:
        yield home


def refused(res: CliResult) -> None:
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == EXIT_DISK, res.stderr
    [line] = res.stderr.strip().splitlines()
    assert line.startswith("error[home-read-only]: ") and "(hint: " in line, line


def test_a_read_only_home_serves_what_it_holds_and_refuses_writes_clearly(
        run_cli: RunCli, home_fs: Path, mirror: Mirror, tmp_path: Path) -> None:
    res = run_cli(["pull", "Org/Small", "--json"], endpoint=mirror.url)
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout.strip().splitlines()[-1])
    snapshot, commit = result["snapshot"], result["commit"]
    archive = tmp_path / "small.tar"
    assert run_cli(["export", "Org/Small", "-o", str(archive)]).returncode == 0
    # Something for gc to remove: a blob no snapshot links to.
    stray = home_fs / "hub" / "models--Org--Small" / "blobs" / ("e" * 64)
    stray.write_bytes(b"unreferenced")
    folder = tmp_path / "to-adopt"
    write_file(folder / "config.json", b"{}\n")
    remount(home_fs, "ro")
    try:
        # Reading, and pulling what is complete: the path, as always.
        for args in (["pull", "Org/Small"], ["pull", f"Org/Small@{commit}"], ["path", "Org/Small"]):
            res = run_cli(args, endpoint=mirror.url)
            assert res.returncode == 0 and res.stdout.strip() == snapshot, res.stderr
            assert "Traceback" not in res.stderr
        assert run_cli(["ls"]).returncode == 0
        # Whatever has to write says so.
        refused(run_cli(["pull", "datasets/Org/Data"], endpoint=mirror.url))
        refused(run_cli(["rm", "Org/Small"]))
        refused(run_cli(["rm", "Org/Small@main"]))
        refused(run_cli(["gc"]))
        refused(run_cli(["adopt", str(folder), "--as", "Me/Model"]))
        refused(run_cli(["import", str(archive)]))
    finally:
        remount(home_fs, "rw")
    assert stray.exists() and (Path(snapshot) / "config.json").exists(), "nothing was lost"


def test_a_read_only_home_without_snapshots_refuses_import_and_gc(
        run_cli: RunCli, home_fs: Path, mirror: Mirror, tmp_path: Path) -> None:
    other = tmp_path / "other"
    assert run_cli(["pull", "Org/Small"], endpoint=mirror.url, home=other).returncode == 0
    archive = tmp_path / "small.tar"
    assert run_cli(["export", "Org/Small", "-o", str(archive)], home=other).returncode == 0
    shutil.rmtree(other)
    stale = home_fs / "qwenhome" / "locks" / f"{'1' * 64}.lock"  # as a killed pull leaves one
    stale.parent.mkdir(parents=True)
    stale.touch()
    remount(home_fs, "ro")
    try:
        refused(run_cli(["import", str(archive)]))
        refused(run_cli(["gc"]))  # not a claim to have removed it
    finally:
        remount(home_fs, "rw")
    assert stale.exists()
