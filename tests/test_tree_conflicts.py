"""A file list no folder can hold (``a`` and ``a/b``, or one path twice),
from a source or in an import archive, is refused before anything is
written: one error line, and no half-made repository in the home."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from qwenhome.errors import EXIT_NETWORK
from qwenhome.store.archive import FORMAT, MANIFEST_MEMBER
from tests.conftest import RunCli
from tests.support.cli import CliResult
from tests.support.http import request
from tests.support.mirror import Mirror, pull_through_settings, start_pull_through

BODIES = {"a": b"first", "a/b": b"second"}


def oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


def refused(res: CliResult, code: str) -> None:
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == EXIT_NETWORK, res.stderr
    [line] = res.stderr.strip().splitlines()[-1:]
    assert line.startswith(f"error[{code}]: ") and "(hint: " in line, line


def nothing_of(home: Path, folder: str) -> None:
    leftovers = [p for p in home.rglob("*") if folder in p.as_posix()]
    assert leftovers == [], f"half-made: {leftovers}"


@pytest.mark.parametrize("listing", [
    [("a", BODIES["a"]), ("a/b", BODIES["a/b"])],
    [("a/b", BODIES["a/b"]), ("a", BODIES["a"])],
    [("a", BODIES["a"]), ("a", BODIES["a/b"])],
], ids=["file-then-folder", "folder-then-file", "twice"])
def test_a_listing_no_folder_can_hold_is_refused_before_any_write(
        listing: list[tuple[str, bytes]], run_cli: RunCli, qwen_home: Path, mirror: Mirror) -> None:
    files = [{"path": path, "size": len(body), "oid": oid(body)} for path, body in listing]
    mirror.faults.forge_repo("Org/Clash", files, bodies=dict(listing))
    res = run_cli(["pull", "Org/Clash"], endpoint=mirror.url)
    refused(res, "bad-metadata")
    nothing_of(qwen_home, "Org--Clash")


def crafted_archive(path: Path) -> None:
    """What ``qwenhome export`` would write, if a snapshot could hold ``a`` and ``a/b``."""
    folder, commit = "models--Org--Clash", "c" * 40
    doc = {"format": FORMAT, "repo_id": "Org/Clash", "repo_type": "model", "commit": commit, "refs": ["main"],
           "files": [{"path": p, "size": len(b), "etag": oid(b)} for p, b in BODIES.items()]}
    with tarfile.open(path, "w") as tar:
        for name, data in [(MANIFEST_MEMBER, json.dumps(doc).encode()),
                           *((f"{folder}/blobs/{oid(b)}", b) for b in BODIES.values())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_an_archive_listing_a_file_and_its_folder_is_refused_before_any_write(
        run_cli: RunCli, qwen_home: Path, tmp_path: Path) -> None:
    archive = tmp_path / "clash.tar"
    crafted_archive(archive)
    res = run_cli(["import", str(archive)])
    refused(res, "bad-archive")
    nothing_of(qwen_home, "Org--Clash")


def test_a_pull_through_mirror_never_saves_or_serves_a_listing_no_folder_can_hold(
        qwen_home: Path, mirror: Mirror) -> None:
    """The upstream lists ``a`` and ``a/b``: the mirror answers an error for the
    repository and keeps nothing of it (a stock client would otherwise fail
    half-way through writing it)."""
    files = [{"path": path, "size": len(body), "oid": oid(body)} for path, body in BODIES.items()]
    mirror.faults.forge_repo("Org/Clash", files, bodies=dict(BODIES))
    front, _ = start_pull_through(pull_through_settings(qwen_home, mirror.url))
    with front:
        res = request(front.url, path="/api/models/Org/Clash/revision/main")
        assert res.status == 502 and b"bad-metadata" in res.body, (res.status, res.body)
        res = request(front.url, path="/Org/Clash/resolve/main/a")
        assert res.status >= 400, res.status
    nothing_of(qwen_home, "Org--Clash")
