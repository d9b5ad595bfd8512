"""The transfer benchmark against a server this project did not write: nginx
serves the files (ranges, ETag, ``limit_rate`` per connection) and the
project's server only the metadata. Tiny sizes; every run sha256-verified."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SIZES = ["--size-mb", "4", "--many-files", "6", "--many-max-kb", "200", "--many-big-mb", "1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_bench_runs_against_nginx(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.skip("nginx is not installed")
    if shutil.which("aria2c") is None:
        pytest.skip("aria2c is not installed")
    repos = tmp_path / "repos"
    subprocess.run([sys.executable, str(ROOT / "bench/transfer.py"), "--generate-only", str(repos), *SIZES],
                   check=True, capture_output=True, timeout=120)
    endpoint = subprocess.Popen([sys.executable, str(ROOT / "bench/nginx_endpoint.py"), "--root", str(repos),
                                 "--port", str(free_port()), "--limit-mbps", "20"],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert endpoint.stdout is not None
        url = json.loads(endpoint.stdout.readline())["url"]
        out = tmp_path / "report.json"
        proc = subprocess.run(
            [sys.executable, str(ROOT / "bench/transfer.py"), "--endpoint", url, *SIZES,
             "--scenario", "one-big-limited", "--scenario", "many-files", "--tools", "qwenhome,aria2c",
             "--timeout", "60", "--workdir", str(tmp_path / "work"), "--json-out", str(out)],
            capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr[-2000:]
        doc = json.loads(out.read_text())
        for name, scenario in doc["scenarios"].items():
            # "ok": the run exited 0 and left every file with the expected sha256.
            assert {r["tool"]: r["status"] for r in scenario["results"]} == {"qwenhome": "ok", "aria2c": "ok"}, name
    finally:
        endpoint.send_signal(signal.SIGTERM)
        endpoint.wait(20)
    assert endpoint.returncode == 0
