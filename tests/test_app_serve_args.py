"""The API server process's own numbers (``python -m qwenhome.app.serve``,
which the launcher starts) are ASCII: int() and float() would take 1_000,
１２３, nan; each is a usage error (exit 2) before anything starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BASE = ["--home", "h", "--model", "Org/Name", "--snapshot", "s"]


@pytest.mark.parametrize(("option", "value"), [
    ("--port", "1_000"), ("--port", "\uff11\uff12\uff13"), ("--port", "99999"), ("--port", "0"),
    ("--max-queue", "3_2"), ("--max-queue", "\u0663"), ("--max-body-mib", "1_0"), ("--max-body-mib", "nan"),
    ("--ready-wait", "inf"), ("--ready-wait", "\uff15"),
])
def test_numbers_that_are_not_plain_ascii_are_refused(tmp_path: Path, option: str, value: str) -> None:
    res = subprocess.run([sys.executable, "-m", "qwenhome.app.serve", *BASE, option, value],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert f"argument {option}" in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_what_the_launcher_writes_is_taken() -> None:
    from qwenhome.app.serve import build_parser

    args = build_parser().parse_args([*BASE, "--port", "8000", "--max-body-mib", repr(1e-05), "--ready-wait", "2.5"])
    assert (args.port, args.max_body_mib, args.ready_wait) == (8000, 1e-05, 2.5)
