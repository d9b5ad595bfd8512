"""JSON nested deeper than Python's decoder goes (``[[[[…``, a few hundred KB
from a hostile server or in a crafted archive) is bad data like any other:
one error line with its code, never a RecursionError traceback."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from qwenhome.doctor import run_doctor
from qwenhome.errors import EXIT_NETWORK, EXIT_NOT_FOUND
from qwenhome.store.archive import MANIFEST_MEMBER
from tests.conftest import RunCli
from tests.doctor_support.setup import options_for, settings_for
from tests.support.cli import CliResult
from tests.support.mirror import Mirror

DEEP = "[" * 100_000  # the decoder gives up near 1,000 levels


def one_error_line(res: CliResult, code: str, exit_code: int) -> None:
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == exit_code, res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith(f"error[{code}]: "), res.stderr


def test_deeply_nested_revision_metadata_is_not_a_hub(run_cli: RunCli, mirror: Mirror) -> None:
    mirror.faults.respond(200, DEEP, path="/api/models/Org/Small/revision/main")
    one_error_line(run_cli(["pull", "Org/Small"], endpoint=mirror.url), "not-a-hub", EXIT_NETWORK)


def test_deeply_nested_error_body_keeps_the_status_meaning(run_cli: RunCli, mirror: Mirror) -> None:
    # (An error body is read up to 64 KiB: this one fits, and is decoded for the server's message.)
    mirror.faults.respond(404, DEEP[:60_000], path="/api/models/Org/Small/revision/main")
    one_error_line(run_cli(["pull", "Org/Small"], endpoint=mirror.url), "repo-not-found", EXIT_NOT_FOUND)


def test_deeply_nested_archive_manifest_is_a_bad_archive(run_cli: RunCli, tmp_path: Path) -> None:
    archive = tmp_path / "deep.tar"
    with tarfile.open(archive, "w") as tar:
        data = DEEP.encode()
        info = tarfile.TarInfo(MANIFEST_MEMBER)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    one_error_line(run_cli(["import", str(archive)]), "bad-archive", EXIT_NETWORK)


def test_deeply_nested_stored_manifest_is_ignored_not_fatal(run_cli: RunCli, qwen_home: Path, mirror: Mirror) -> None:
    """A manifest in the home's state that cannot be decoded (whoever wrote it)
    is taken as absent, as an unreadable one is: the pull places the snapshot."""
    assert run_cli(["pull", "Org/Small"], endpoint=mirror.url).returncode == 0
    [manifest] = (qwen_home / "qwenhome" / "manifests").rglob("*.json")
    json.loads(manifest.read_text())  # (it is there and valid before)
    manifest.write_text(DEEP)
    res = run_cli(["ls"])
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr


def test_doctor_names_a_deeply_nested_answer_not_a_hub(tmp_path: Path, mirror: Mirror) -> None:
    mirror.faults.respond(200, DEEP)
    report = run_doctor(settings_for(tmp_path, [mirror.url]), repo="Org/Small", options=options_for(tmp_path))
    check = next(c for c in report.checks if c.id == "api:hf")
    assert (check.status, check.code) == ("fail", "not-a-hub"), check
