"""``verify`` says ok only when every snapshot can be read: a blob deleted by
hand, or replaced by something that is not a file (a FIFO), is a bad blob
with reason ``missing`` (exit 6), and ``--repair`` fetches it again."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from qwenhome.errors import EXIT_INTEGRITY
from tests.conftest import RunCli
from tests.support.mirror import Mirror


@pytest.mark.parametrize("how", ["deleted", "fifo"])
def test_a_missing_blob_fails_verify_and_repair_fetches_it(
        how: str, run_cli: RunCli, qwen_home: Path, mirror: Mirror) -> None:
    res = run_cli(["pull", "Org/Small"], endpoint=mirror.url)
    assert res.returncode == 0, res.stderr
    snap = Path(res.stdout.strip())
    blob = (snap / "config.json").resolve()
    blob.unlink()
    if how == "fifo":
        os.mkfifo(blob)
    res = run_cli(["verify", "Org/Small"])
    assert res.returncode == EXIT_INTEGRITY, res.stdout + res.stderr
    assert "config.json" in res.stdout and "missing" in res.stdout, res.stdout
    doc = json.loads(run_cli(["verify", "--json"]).stdout)
    assert doc["ok"] is False and doc["repos"][0]["bad"][0]["paths"] == ["config.json"], doc
    res = run_cli(["verify", "--repair", "Org/Small"], endpoint=mirror.url)
    assert res.returncode == 0, res.stdout + res.stderr
    assert run_cli(["verify", "Org/Small"]).returncode == 0
    assert (snap / "config.json").read_bytes().startswith(b"{")
