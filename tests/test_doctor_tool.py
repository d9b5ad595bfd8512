"""``python3 tools/fix_network_issues.py`` from a checkout: runs ``qwenhome
doctor --fix`` (as a real subprocess), JSON out, exit code from the verdicts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.doctor_support.hub import FakeHub
from tests.doctor_support.sockets import closed_port

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT / "tools" / "fix_network_issues.py"


def _run(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path / "user"),
             "QWEN_HOME": str(tmp_path / "home"), **(env or {})}
    # The system python3, as a user would type it; the tool finds the project's .venv itself.
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    return subprocess.run([python, str(TOOL), *args], cwd=tmp_path, env=clean, capture_output=True,
                          text=True, timeout=60)


def test_tool_runs_doctor_fix_and_exits_zero_when_all_is_well(tmp_path: Path) -> None:
    with FakeHub() as hub:
        proc = _run(tmp_path, "--json", "--source", hub.url)
        assert any(p.startswith("/api/models/Qwen/Qwen2.5-0.5B-Instruct/revision/main") for _, p, _ in hub.requests)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] is True and doc["fixes_applied"] == []
    assert {c["status"] for c in doc["checks"]} <= {"pass", "skip", "warn"}
    for check in doc["checks"]:
        assert set(check) >= {"id", "status", "code", "summary", "fix"}


def test_tool_exits_non_zero_and_applies_fixes_when_a_check_fails(tmp_path: Path) -> None:
    port = closed_port()
    proc = _run(tmp_path, "--json", "--source", f"http://127.0.0.1:{port}",
                env={"TRANSFORMERS_CACHE": str(tmp_path / "tf")})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] is False
    assert any(c["code"] == "connection-refused" for c in doc["checks"])
    assert [f["id"] for f in doc["fixes_applied"]] == ["write-env-sh"]  # --fix is implied
    assert (tmp_path / "home" / "env.sh").is_file()


def test_tool_prints_the_human_table(tmp_path: Path) -> None:
    proc = _run(tmp_path, "--source", f"http://127.0.0.1:{closed_port()}")
    assert proc.returncode == 1
    assert "FAIL" in proc.stdout and "connection-refused" in proc.stdout and "fix:" in proc.stdout


def test_offline_checks_the_home_and_sends_nothing(tmp_path: Path) -> None:
    """``--offline``: the home's checks run, the network is reported as not
    checked, and the source sees no request."""
    with FakeHub() as hub:
        proc = _run(tmp_path, "--json", "--offline", "--source", hub.url,
                    env={"HF_HUB_OFFLINE": "1", "HF_HUB_ENABLE_HF_TRANSFER": "1"})
        assert hub.requests == []
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    by_id = {c["id"]: c for c in doc["checks"]}
    assert by_id["network"]["status"] == "skip" and "--offline" in by_id["network"]["summary"]
    assert by_id["disk-space"]["status"] == "pass"
    assert "not checked" in by_id["offline-flag"]["summary"]
    assert by_id["hf-transfer"]["code"] == "deprecated-hf-transfer"
    # --fix (implied by the tool) still writes the home's env.sh; no source is reordered.
    assert [f["id"] for f in doc["fixes_applied"]] == ["write-env-sh"]
