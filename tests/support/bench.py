"""Running ``bench/transfer.py`` against an endpoint script (nginx, FastAPI)
in the test suite: the script prints one JSON line (its ``url`` and more)
once it listens, and stops on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def bench_against(endpoint: Sequence[str], tmp_path: Path,
                  args: Callable[[dict[str, Any]], list[str]]) -> dict[str, Any]:
    """Start ``endpoint`` (a bench script and its arguments), run the benchmark
    with ``--endpoint`` its URL and ``args(started)`` (``started``: the line it
    printed), stop it, and return the benchmark's JSON report."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / endpoint[0]), *endpoint[1:]],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        started: dict[str, Any] = json.loads(proc.stdout.readline())
        out = tmp_path / "report.json"
        run = subprocess.run(
            [sys.executable, str(ROOT / "bench/transfer.py"), "--endpoint", started["url"], *args(started),
             "--timeout", "60", "--workdir", str(tmp_path / "work"), "--json-out", str(out)],
            capture_output=True, text=True, timeout=180)
        assert run.returncode == 0, run.stderr[-2000:]
        doc: dict[str, Any] = json.loads(out.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    assert proc.returncode == 0
    return doc
