"""The transfer benchmark against a server this project did not write: nginx
serves the files (ranges, ETag, ``limit_rate`` per connection) and the
project's server only the metadata. Tiny sizes; every run sha256-verified."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.bench import bench_against

ROOT = Path(__file__).resolve().parents[1]
SIZES = ["--size-mb", "4", "--many-files", "6", "--many-max-kb", "200", "--many-big-mb", "1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def nginx_repos(tmp_path: Path) -> Path:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.skip("nginx is not installed")
    if shutil.which("aria2c") is None:
        pytest.skip("aria2c is not installed")
    repos = tmp_path / "repos"
    subprocess.run([sys.executable, str(ROOT / "bench/transfer.py"), "--generate-only", str(repos), *SIZES],
                   check=True, capture_output=True, timeout=120)
    return repos


def _bench(tmp_path: Path, repos: Path, limit_mbps: str, *args: str, tls: bool = False) -> dict[str, Any]:
    endpoint = ["nginx_endpoint.py", "--root", str(repos), "--port", str(free_port()), "--limit-mbps", limit_mbps,
                *(["--tls"] if tls else [])]
    return bench_against(endpoint, tmp_path, lambda started: [
        *SIZES, *args, *(["--ca-file", started["ca_file"]] if tls else [])])


def test_bench_runs_against_nginx(tmp_path: Path, nginx_repos: Path) -> None:
    doc = _bench(tmp_path, nginx_repos, "20", "--scenario", "one-big-limited", "--scenario", "many-files",
                 "--tools", "qwenhome,aria2c")
    for name, scenario in doc["scenarios"].items():
        # "ok": the run exited 0 and left every file with the expected sha256.
        assert {r["tool"]: r["status"] for r in scenario["results"]} == {"qwenhome": "ok", "aria2c": "ok"}, name


def test_bench_runs_against_nginx_over_https(tmp_path: Path, nginx_repos: Path) -> None:
    """``nginx_endpoint.py --tls`` and ``transfer.py --ca-file``: every tool
    is given the throw-away CA, and qwenhome's loop moves the files over TLS."""
    doc = _bench(tmp_path, nginx_repos, "20", "--scenario", "many-files", "--tools", "qwenhome,aria2c,curl", tls=True)
    assert doc["endpoint"].startswith("https://")
    results = doc["scenarios"]["many-files"]["results"]
    assert {r["tool"]: r["status"] for r in results} == {"qwenhome": "ok", "aria2c": "ok", "curl": "ok"}


def test_shaping_proxy_applies_latency_and_counts_resume_bytes(tmp_path: Path, nginx_repos: Path) -> None:
    """``--shape``: nginx without a limit, the proxy adds the scenario's
    latency and per-connection limit and counts what the server sent."""
    doc = _bench(tmp_path, nginx_repos, "0", "--shape", "--scenario", "latency", "--scenario", "resume",
                 "--tools", "qwenhome,curl", "--latency-ms", "100", "--limit-mbps", "0.5")
    latency = {r["tool"]: r for r in doc["scenarios"]["latency"]["results"]}
    assert {t: r["status"] for t, r in latency.items()} == {"qwenhome": "ok", "curl": "ok"}
    # curl asks for the 8 files one after another: at least 8 delayed answers.
    assert latency["curl"]["wall_s"] >= 8 * 0.1
    assert latency["curl"]["server"]["connections"] == 1
    resume = doc["scenarios"]["resume"]["results"][0]
    assert resume["status"] == "ok", resume
    size = 4 * 1000 * 1000
    assert size <= resume["extra"]["bytes_sent_total"] <= 1.1 * size + 200_000, resume["extra"]
