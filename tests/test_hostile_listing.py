"""A source's (or an archive's) file list that lies about sizes or names:
refused with one error line before anything is fetched or written."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from qwenhome.errors import EXIT_NETWORK
from qwenhome.store.archive import FORMAT, MANIFEST_MEMBER
from tests.conftest import RunCli
from tests.support.cli import CliResult
from tests.support.mirror import Mirror

BODY = b"hello"
OID = hashlib.sha1(b"blob %d\x00" % len(BODY) + BODY).hexdigest()


def refused(res: CliResult, code: str) -> str:
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == EXIT_NETWORK, res.stderr
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error[{code}]: ") and "(hint: " in line, line
    return line


def nothing_of(home: Path, folder: str) -> None:
    leftovers = [p for p in home.rglob("*") if folder in p.as_posix()]
    assert leftovers == [], f"half-made: {leftovers}"


# Sizes no file has. (json.dumps writes inf as Infinity and nan as NaN, as a
# hostile server may: Python's decoder takes them.)
BAD_SIZES = [float("inf"), float("-inf"), float("nan"), 1.5, -1, True, "5 ", "²", 10**30]


@pytest.mark.parametrize("size", BAD_SIZES, ids=[repr(s) for s in BAD_SIZES])
def test_a_listed_size_that_is_not_a_size_is_bad_metadata(
        size: Any, run_cli: RunCli, qwen_home: Path, mirror: Mirror) -> None:
    mirror.faults.forge_repo("Org/Sizes", [{"path": "a.bin", "size": size, "oid": OID}], bodies={"a.bin": BODY})
    line = refused(run_cli(["pull", "Org/Sizes"], endpoint=mirror.url), "bad-metadata")
    assert "a.bin" in line
    nothing_of(qwen_home, "Org--Sizes")


def test_a_size_given_as_a_whole_float_or_digits_is_taken(run_cli: RunCli, mirror: Mirror) -> None:
    """What lenient servers send (5.0, "5") is still understood."""
    for size in (5.0, "5"):
        mirror.faults.clear()
        mirror.faults.forge_repo("Org/Sizes", [{"path": "a.bin", "size": size, "oid": OID}], bodies={"a.bin": BODY})
        res = run_cli(["pull", "Org/Sizes"], endpoint=mirror.url)
        assert res.returncode == 0, res.stderr
        assert (Path(res.stdout.strip()) / "a.bin").read_bytes() == BODY


@pytest.mark.parametrize("size", [float("inf"), 1.5, True], ids=repr)
def test_an_archive_listing_a_size_that_is_not_a_size_is_a_bad_archive(
        size: Any, run_cli: RunCli, qwen_home: Path, tmp_path: Path) -> None:
    doc = {"format": FORMAT, "repo_id": "Org/Sizes", "repo_type": "model", "commit": "c" * 40, "refs": ["main"],
           "files": [{"path": "a.bin", "size": size, "etag": OID}]}
    archive = tmp_path / "sizes.tar"
    with tarfile.open(archive, "w") as tar:
        for name, data in [(MANIFEST_MEMBER, json.dumps(doc).encode()), (f"models--Org--Sizes/blobs/{OID}", BODY)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    refused(run_cli(["import", str(archive)]), "bad-archive")
    nothing_of(qwen_home, "Org--Sizes")
