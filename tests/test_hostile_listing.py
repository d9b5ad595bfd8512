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
from qwenhome.mirror import FolderBackend
from qwenhome.store.archive import FORMAT, MANIFEST_MEMBER
from tests.conftest import RunCli
from tests.support.cli import CliResult
from tests.support.mirror import Mirror, start_mirror
from tests.support.repos import make_repo

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


# Names a snapshot folder cannot hold, or that would drive the terminal when printed.
BAD_NAMES = {
    "escape": "\x1b]0;owned\x07\x1b[2J.txt",
    "carriage-return": "a\rb.txt",
    "newline": "a\nb.txt",
    "c1-control": "a\x9bb.txt",
    "lone-surrogate": "\udc80.txt",
    "component-of-300-bytes": "d/" + "a" * 300,
    "component-of-256-utf8-bytes": "\U0001F600" * 64,
}


@pytest.mark.parametrize("name", BAD_NAMES.values(), ids=BAD_NAMES.keys())
def test_a_listed_name_the_home_cannot_hold_is_refused_before_any_write(
        name: str, run_cli: RunCli, qwen_home: Path, mirror: Mirror) -> None:
    mirror.faults.forge_repo("Org/Names", [{"path": name, "size": len(BODY), "oid": OID}], bodies={name: BODY})
    line = refused(run_cli(["pull", "Org/Names"], endpoint=mirror.url), "unsafe-path")
    assert "\x1b" not in line and "\r" not in line
    nothing_of(qwen_home, "Org--Names")


def test_names_any_file_system_holds_are_taken(run_cli: RunCli, tmp_path: Path) -> None:
    names = ["é/ü ñ.txt", "\U0001F600" * 63, "a" * 255, "x/" * 50 + "deep.txt"]
    repo = make_repo(tmp_path / "repos", "Org/Names", {n: i + 1 for i, n in enumerate(names)})
    with start_mirror(FolderBackend(repo.root)) as m:
        res = run_cli(["pull", "Org/Names"], endpoint=m.url)
    assert res.returncode == 0, res.stderr
    for n in names:
        assert (Path(res.stdout.strip()) / n).read_bytes() == (repo.path / n).read_bytes()


def test_patterns_that_match_no_file_say_so(run_cli: RunCli, mirror: Mirror) -> None:
    """A pattern with a typo selects nothing: the pull succeeds (as
    huggingface_hub's allow_patterns does) but says the folder is empty."""
    res = run_cli(["pull", "Org/Small", "--include", "*.safetensor"], endpoint=mirror.url)
    assert res.returncode == 0, res.stderr
    assert "warning: no file of Org/Small matches --include/--exclude" in res.stderr, res.stderr
    res = run_cli(["pull", "Org/Small", "--include", "*.safetensors"], endpoint=mirror.url)
    assert res.returncode == 0 and "warning" not in res.stderr, res.stderr
